"""Validate a training run's checkpoint on its validation sets (and any other manifest).

    python -m spidr_jax.validate --workdir runs/base                  # newest checkpoint, configured sets
    python -m spidr_jax.validate --workdir runs/base --step 5000 --manifest dev_other=dev_other.csv

Loss and perplexities as the reference's validate.py computes them. Results are printed, appended to
`<workdir>/validation.jsonl` and written to TensorBoard under the set's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import jax
from jax.sharding import NamedSharding, PartitionSpec

from spidr_jax.config.run import Config, DataConfig
from spidr_jax.data.manifest import ManifestError
from spidr_jax.data.pipeline import validation_batches
from spidr_jax.data.scan import left_out_line
from spidr_jax.errors import exit_on_user_error
from spidr_jax.pretrained import abstract_model
from spidr_jax.sharding import data_mesh
from spidr_jax.train.checkpoints import RunCheckpoints, abstract_train_state
from spidr_jax.train.config_history import current_config
from spidr_jax.train.evaluation import eval_step_function, validate_set
from spidr_jax.train.state import COMPUTE_DTYPES, split_model
from spidr_jax.train.tensorboard import MetricsWriter

RESULTS_FILE = "validation.jsonl"


def validation_sets(cfg: Config, extra: list[str]) -> dict[str, DataConfig]:
    """The config's validation sets plus `NAME=MANIFEST` ones (with the training data settings)."""
    sets = dict(cfg.validation)
    for item in extra:
        name, sep, manifest = item.partition("=")
        if not sep or not name or not manifest:
            raise ManifestError(item, "--manifest expects NAME=PATH")
        sets[name] = dataclasses.replace(cfg.data, manifest=manifest)
    return sets


def validate_checkpoint(
    workdir: Path, step: int | None, extra: list[str], *, progress: bool = True, say: Callable[[str], None] = print
) -> list[dict]:
    """Validate one checkpoint on every set; returns the result records (also written to the workdir).

    `say` hears the checkpoint used, each set's rows left out (unusable files, too short ones) and those that
    failed to decode.
    """
    workdir = workdir.resolve()
    cfg = current_config(workdir)
    sets = validation_sets(cfg, extra)
    if not sets:
        raise ManifestError(workdir, "no validation set configured; pass --manifest NAME=PATH")
    mesh = data_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    checkpoints = RunCheckpoints(workdir, read_only=True)
    state, _ = checkpoints.restore(abstract_train_state(cfg.model, cfg.optimizer, replicated), step)
    checkpoints.close()
    step = int(state.step)
    say(f"checkpoint: {workdir} (training workdir, step {step})")
    split = split_model(abstract_model(cfg.model, COMPUTE_DTYPES[cfg.optimizer.dtype]))[0]
    evaluate = eval_step_function(split, mesh)
    writer = MetricsWriter(workdir / "tensorboard", enabled=jax.process_index() == 0)
    records = []
    for name, data_cfg in sets.items():
        data = validation_batches(
            data_cfg, cfg.masking, cfg.model, seed=cfg.data.random_seed, num_data_shards=mesh.size, progress=progress
        )
        left_out = left_out_line(data.scan, data.min_samples)
        if left_out:
            say(f"warning: {name}: {left_out}")
        result = validate_set(evaluate, state, data, mesh)
        writer.scalars(name, result.values, step)
        left = data.scan.num_too_short + len(data.scan.problems)
        say(f"{name}: {len(data.scan.rows)} files scored, {left} left out, {len(result.failed)} failed to decode")
        records.append({"step": step, "group": name} | result.values)
        if result.failed:
            say(result.describe(name, step))
    writer.close()
    if jax.process_index() == 0:
        with (workdir / RESULTS_FILE).open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
    return records


def stderr_line(line: str) -> None:
    """Print one line on stderr (results go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, validate, print one line per set."""
    parser = argparse.ArgumentParser(
        prog="python -m spidr_jax.validate",
        description="Validate a training run's checkpoint on its validation sets (and other manifests): loss and "
        "perplexities as the reference's validate.py computes them, printed, appended to WORKDIR/validation.jsonl "
        "and written to TensorBoard under the set's name.",
    )
    parser.add_argument("--workdir", required=True, type=Path, help="the training run's workdir")
    parser.add_argument(
        "--step", type=int, default=None, help="the checkpoint of this step (default: the newest intact one)"
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another set to validate on, with the run's data settings (repeatable); default: the run's sets",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        records = validate_checkpoint(
            args.workdir,
            args.step,
            args.manifest,
            progress=not args.quiet,
            say=lambda line: print(line, file=sys.stderr),
        )
    for record in records:
        values = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in {"step", "group"})
        print(f"{record['group']} step {record['step']}: {values}")
