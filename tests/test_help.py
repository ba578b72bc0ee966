"""Every command's --help: it names the command as `python -m spidr_jax.<command>`, says what it does, and describes
every option, with defaults where they exist and none on required options."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")
COMMANDS = [
    ("train",),
    ("validate",),
    ("extract",),
    ("kmeans",),
    ("kmeans", "fit"),
    ("evaluate",),
    ("evaluate", "units"),
    ("evaluate", "abx"),
    ("evaluate", "plot"),
    ("convert",),
    ("convert", "torch-to-orbax"),
    ("convert", "orbax-to-torch"),
    ("download",),
    ("manifest",),
    ("config",),
    ("config.cli",),
    ("launch",),
    ("data.write_manifest",),
]


def undescribed_options(text: str) -> list[str]:
    """The options of an argparse help screen listed without any description."""
    lines = text.split("options:", 1)[-1].splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^  (-[\w-]+(?:, --[\w-]+)?)(?: [A-Z_.{},\[\]-]+)?(\s{2,}\S.*)?$", line)
        if match and not match.group(2):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not following.startswith(" " * 10) or following.lstrip().startswith("-"):
                missing.append(match.group(1))
    return missing


def run_help(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, module: str, *args: str) -> str:
    """`python -m spidr_jax.MODULE ARGS --help` in this process (one import of JAX for all): its output."""
    monkeypatch.setattr(sys, "argv", [module, *args, "--help"])
    capsys.readouterr()
    code: int | str | None = None
    try:
        runpy.run_module(f"spidr_jax.{module}", run_name="__main__", alter_sys=False)
    except SystemExit as stop:  # argparse exits after the help; a command may also just return
        code = stop.code
    assert code in (None, 0)
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(command) for command in COMMANDS])
def test_every_help_names_the_command_and_describes_every_option(command, capsys, monkeypatch):
    text = run_help(capsys, monkeypatch, *command)
    module = command[0] if command[0] not in {"config.cli", "data.write_manifest"} else None
    if module is not None:
        assert text.startswith(f"usage: python -m spidr_jax.{' '.join([module, *command[1:]])}"), text[:200]
    assert len(text.splitlines()) > 5
    assert undescribed_options(text) == []
    for line in text.splitlines():
        if "(default: None)" in line:
            pytest.fail(f"a default of None shown: {line}")


def test_train_help_points_to_the_list_of_fields(capsys, monkeypatch):
    assert "python -m spidr_jax.config --config=configs/base.py" in run_help(capsys, monkeypatch, "train")


def test_help_is_a_subprocess_too():
    done = subprocess.run([sys.executable, "-m", "spidr_jax.extract", "--help"], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m spidr_jax.extract")
