"""Error types shared across the package."""

from __future__ import annotations


class MissingDependencyError(ImportError):
    """An optional dependency is needed; the message names the pip extra that brings it."""
