"""The configs a training workdir was started with: one record per start, so that what a run trained on is kept.

`config.json` holds the config of the first start (the reference's layout). Every start appends one line to
`config_history.jsonl`: the time, the step it started from and the resolved config. A restart whose data, seed or
optimizer settings differ from the last start says so, one line per field; with `run.strict_resume=true` it is
refused instead. (A change of the model is always refused: the checkpoints would not fit it.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from spidr_jax.config.loading import config_from_json, config_to_json
from spidr_jax.config.model import ConfigError
from spidr_jax.config.run import Config
from spidr_jax.storage.atomic import write_text

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
WATCHED = ("data", "optimizer")  # the sections whose changes matter to a resumed run (and run.random_seed)


def current_config(workdir: Path) -> Config:
    """The config of the workdir's last start (its validation sets, data and optimizer settings)."""
    last = last_start(workdir)
    if last is None:
        raise FileNotFoundError(f"{workdir / CONFIG_FILE}: no such file (is {workdir} a training workdir?)")
    return config_from_json(json.dumps(last))


def last_start(workdir: Path) -> dict | None:
    """The config (as JSON data) of the workdir's last start: the history's last record, else `config.json`."""
    history = workdir / HISTORY_FILE
    if history.exists():
        lines = [line for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
        for line in reversed(lines):
            try:
                return json.loads(line)["config"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a crash
    path = workdir / CONFIG_FILE
    return json.loads(config_to_json(config_from_json(path))) if path.exists() else None


def changed_fields(before: dict, now: dict) -> list[tuple[str, object, object]]:
    """(field, value then, value now) of the watched fields that differ."""
    changes = []
    for section in WATCHED:
        old, new = before.get(section, {}), now.get(section, {})
        changes.extend(
            (f"{section}.{name}", old.get(name), value) for name, value in new.items() if old.get(name) != value
        )
    if before.get("run", {}).get("random_seed") != now["run"]["random_seed"]:
        changes.append(("run.random_seed", before.get("run", {}).get("random_seed"), now["run"]["random_seed"]))
    return changes


def check_restart(cfg: Config, workdir: Path, say: Callable[[str], None]) -> None:
    """Compare a restart's config with the last start's: refuse a model change, and (strict) any watched change."""
    path = workdir / CONFIG_FILE
    if path.exists():
        previous = config_from_json(path)
        if previous.model != cfg.model:
            changed = [
                name for name, value in cfg.model.to_dict().items() if previous.model.to_dict().get(name) != value
            ]
            raise ConfigError(
                f"{workdir} holds a run with another model config (model.{', model.'.join(changed) or 'type'} "
                "differ); use a new run.workdir"
            )
    before = last_start(workdir)
    if before is None:
        return
    changes = changed_fields(before, json.loads(config_to_json(cfg)))
    if changes and cfg.run.strict_resume:
        listed = "; ".join(f"{name}: {old!r} then, {new!r} now" for name, old, new in changes)
        raise ConfigError(
            f"{workdir}: this restart changes what the run trains on ({listed}); run.strict_resume=true refuses it "
            f"(the last start's config is in {workdir / HISTORY_FILE})"
        )
    for name, old, new in changes:
        say(f"note: {name} changed since the run's last start: {old!r} then, {new!r} now")


def record_start(cfg: Config, workdir: Path, step: int) -> None:
    """Write `config.json` at the first start; append this start to the history."""
    text = config_to_json(cfg)
    if not (workdir / CONFIG_FILE).exists():
        write_text(workdir / CONFIG_FILE, text + "\n")
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "step": step, "config": json.loads(text)}
    with (workdir / HISTORY_FILE).open("a", encoding="utf-8") as history:
        history.write(json.dumps(record) + "\n")
