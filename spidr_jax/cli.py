"""What every command's command line shares: its help screen's conventions.

Each command is `python -m spidr_jax.<command>` (argparse's `prog`); its help says what it does, describes every
option, and shows a default where an option has one (none on required options and flags). Errors a user can cause
become one line and an exit code through `spidr_jax.errors.exit_on_user_error`.
"""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs as paragraphs, examples (indented lines) as written; defaults after options.

    `(default: X)` follows the help of an option that has a default (not of a required option or a flag).
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip("\n").split("\n\n"):
            if paragraph.startswith(" "):  # command examples
                paragraphs.append(paragraph)
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent))  # fmt: skip
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default == []
        if action.required or no_default or action.default is argparse.SUPPRESS or "%(default)" in text:
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
