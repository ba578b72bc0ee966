"""README.md's shell commands: each names a module or script that exists and only flags its --help lists; and the
commands a user runs after the demo work with relative paths, from the folder they name."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from spidr_jax.config.cli import parse_config
from spidr_jax.config.model import SpidRConfig
from spidr_jax.config.run import DataConfig, MaskingConfig, OptimizerConfig, RunConfig
from spidr_jax.models import build_model
from spidr_jax.train.checkpoints import RunCheckpoints
from spidr_jax.train.config_history import record_start
from spidr_jax.train.state import new_train_state

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUBCOMMANDS = {"evaluate": {"units", "abx", "plot"}, "kmeans": {"fit"}, "convert": {"torch-to-orbax", "orbax-to-torch"}}
SCRIPTS = {
    "convert/torch_to_orbax.py": ("convert", "torch-to-orbax"),
    "convert/orbax_to_torch.py": ("convert", "orbax-to-torch"),
}


def shell_commands(text: str) -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(command, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def invocation(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(module or script, its arguments) of a `python ...` command (after `srun ...` or VAR=value prefixes)."""
    for i, token in enumerate(tokens):
        if token.endswith(("python", "python3")):
            rest = tokens[i + 1 :]
            if rest[:1] == ["-m"]:
                return rest[1], rest[2:]
            if rest and rest[0].endswith(".py"):
                return rest[0], rest[1:]
    return None


@cache
def help_text(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)} --help: {done.stderr[-500:]}"
    return done.stdout


def config_fields() -> set[str]:
    """Every `SECTION.FIELD` of a run config."""
    fields = {"validation"}
    sections = {"run": RunConfig, "data": DataConfig, "optimizer": OptimizerConfig, "masking": MaskingConfig}
    for name, section in (*sections.items(), ("model", SpidRConfig)):
        fields |= {f"{name}.{field.name}" for field in dataclasses.fields(section)}
    return fields


@pytest.mark.slow
def test_every_shell_command_names_a_module_and_flags_it_knows():
    commands = [call for tokens in shell_commands(README.read_text()) if (call := invocation(tokens))]
    assert len(commands) > 20
    fields = config_fields()
    for target, args in commands:
        if target.endswith(".py"):
            assert (ROOT / target).is_file(), target
            module, *sub = SCRIPTS.get(target, (None,))
            if module is None:
                continue
            command = [f"spidr_jax.{module}", *sub]
        else:
            assert importlib.util.find_spec(target) is not None, f"no module {target}"
            command = [target]
            name = target.removeprefix("spidr_jax.")
            if name in SUBCOMMANDS and args and args[0] in SUBCOMMANDS[name]:
                command.append(args[0])
        if not target.startswith(("spidr_jax", "convert/")):
            continue  # bench's scripts have their own flags
        text = help_text(*command)
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--config."):
                assert flag.removeprefix("--config.") in fields, f"{' '.join(command)}: unknown field {flag}"
            elif flag.startswith("--") and flag != "--config":
                assert re.search(rf"{re.escape(flag)}\b", text), f"{' '.join(command)}: {flag} not in its --help"


def demo_workdir(workdir: Path) -> None:
    """A workdir of the demo's config with a checkpoint of an untrained model at step 2, made here (no training)."""
    cfg = parse_config([f"--config={ROOT / 'configs' / 'demo.py'}", f"--config.run.workdir={workdir}"])
    workdir.mkdir(parents=True)
    record_start(cfg, workdir, 0)
    _, state = new_train_state(build_model(cfg.model, seed=0), cfg.optimizer, 0)
    checkpoints = RunCheckpoints(workdir)
    checkpoints.save(state.replace(step=state.step + 2), {"step": 2})
    checkpoints.close()


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, f"{command}:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_commands_after_the_demo_take_relative_paths(tmp_path, cache):
    # A folder as a user's clone: the package and configs, and the test's environment activated.
    for name in ("spidr_jax", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = Path(sys.executable).parent  # an activated environment: `python` is this one
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    env["SPIDR_JAX_COMPILATION_CACHE"] = str(cache)
    readme = README.read_text()
    demo_workdir(tmp_path / "runs" / "demo")  # as the README's demo command leaves it (that run: test_evaluate_cli)
    # The README's own evaluation of the demo, as written.
    evaluation = re.search(r"`(python -m spidr_jax\.evaluate units --checkpoint runs/demo .*?--layer\s+all)`", readme,
                           re.DOTALL).group(1)  # fmt: skip
    done = run(" ".join(evaluation.split()), tmp_path, env)
    assert "checkpoint: " in done.stderr
    assert done.stdout.count("layer ") == 3
    # Every other command a user points at the run or a converted model, with relative paths (audio too).
    rows = (ROOT / "spidr_jax/demo/corpus/dev.relative.csv").read_text().splitlines()
    (tmp_path / "dev.csv").write_text("\n".join([rows[0], *(re.sub(r",audio/", ",spidr_jax/demo/corpus/audio/", row)
                                                            for row in rows[1:9])]) + "\n")  # fmt: skip
    for command in (
        "python -m spidr_jax.validate --workdir runs/demo --quiet",
        "python -m spidr_jax.evaluate plot curves --workdir runs/demo --output curves.png",
        "python -m spidr_jax.evaluate plot codebooks --checkpoint runs/demo --output codebooks.png",
        "python -m spidr_jax.extract --checkpoint runs/demo --manifest dev.csv --output feats --layer 2 --quiet",
        "python -m spidr_jax.convert orbax-to-torch runs/demo demo.pt",
        "python convert/torch_to_orbax.py --model spidr demo.pt converted/demo",
        (
            "python -m spidr_jax.kmeans fit --checkpoint converted/demo --manifest dev.csv --layer 2 --k 8"
            " --output km.npz --epochs 1 --quiet"
        ),
        (
            "python -m spidr_jax.extract --checkpoint converted/demo --manifest dev.csv --output units --layer 2"
            " --kmeans km.npz --units-format km --quiet"
        ),
        "python -c 'import spidr_jax; print(spidr_jax.load_pretrained(\"runs/demo\", step=2).num_layers)'",
    ):
        if command.startswith("python convert/"):
            (tmp_path / "convert").is_symlink() or (tmp_path / "convert").symlink_to(ROOT / "convert")
        run(command, tmp_path, env)
    assert len((tmp_path / "units" / "units.km").read_text().splitlines()) == 8
    assert len(list((tmp_path / "feats").glob("*.npy"))) == 8
    assert (tmp_path / "demo.config.json").is_file()
