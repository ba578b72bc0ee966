"""Importing tensorboardX without torch: it imports torch when installed (1.6 s) only to accept torch tensors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_hidden() -> Iterator[None]:
    """Within the block, `import torch` fails, unless torch is already imported (then nothing changes)."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        del sys.modules["torch"]
