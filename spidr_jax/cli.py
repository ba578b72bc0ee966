"""What every command's command line shares: its help screen's conventions.

Each command is `python -m spidr_jax.<command>` (argparse's `prog`); its help says what it does, describes every
option, and shows a default where an option has one (none on required options and flags). Errors a user can cause
become one line and an exit code through `spidr_jax.errors.exit_on_user_error`.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs kept as written; `(default: X)` after options that have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def command_parser(command: str, doc: str, **kwargs: object) -> argparse.ArgumentParser:
    """The parser of `python -m spidr_jax.<command>`: the first paragraph of `doc` describes it, the rest follows."""
    description, _, rest = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(
        prog=f"python -m spidr_jax.{command}",
        description=description,
        epilog=rest or None,
        formatter_class=HelpFormatter,
        **kwargs,
    )
