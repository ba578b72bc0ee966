"""Unit quality during training, on the validation sets that have phone alignments (`alignments_path`).

The codebook units of every codebook layer are scored at each checkpoint, logged to TensorBoard, and compared
with the initial model at the end of the run.
"""

from __future__ import annotations

from pathlib import Path

from spidr_jax.config.model import DinoSRConfig
from spidr_jax.config.run import DataConfig
from spidr_jax.data.manifest import ManifestRow, read_manifest
from spidr_jax.evaluate.alignments import check_alignment_lengths, read_alignments
from spidr_jax.evaluate.model_units import codebook_units_quality
from spidr_jax.evaluate.plots import read_scalars
from spidr_jax.evaluate.units_quality import UnitsQuality
from spidr_jax.models import DinoSR
from spidr_jax.models.extractor import conv_output_lengths
from spidr_jax.train.tensorboard import MetricsWriter

REPORTED = ("pnmi", "phone_purity", "cluster_purity", "codebook_perplexity", "active_codewords", "bitrate")


class UnitsMonitor:
    """Scores the model's units on the aligned validation sets."""

    def __init__(self, validation: dict[str, DataConfig], model_cfg: DinoSRConfig) -> None:
        """Read the aligned sets and check every alignment against its file's frames (before anything compiles)."""
        self.sets: dict[str, tuple[list[ManifestRow], dict[str, list[str]]]] = {
            name: (read_manifest(cfg.manifest), read_alignments(cfg.alignments_path))
            for name, cfg in validation.items()
            if cfg.alignments_path
        }
        layers = model_cfg.extractor_conv_layer_config
        for name, (rows, alignments) in self.sets.items():
            where = f"validation.{name} ({validation[name].alignments_path})"
            check_alignment_lengths(rows, alignments, lambda n: conv_output_lengths(n, layers), where=where)

    def evaluate(self, model: DinoSR, step: int, writer: MetricsWriter) -> dict[str, dict[int, UnitsQuality]]:
        """Score every aligned set and log `<set>/units_layer<N>/<metric>`."""
        results = {}
        for name, (rows, alignments) in self.sets.items():
            results[name] = codebook_units_quality(model, rows, alignments)
            for layer, quality in results[name].items():
                writer.scalars(f"{name}/units_layer{layer}", quality._asdict(), step)
        return results

    def report(self, workdir: Path, step: int) -> str:
        """A before/after table (step 0 against `step`) from the run's TensorBoard logs."""
        scalars = read_scalars(workdir)
        lines = []
        for name in self.sets:
            prefix = f"{name}/units_layer"
            layers = sorted({int(tag[len(prefix) :].split("/")[0]) for tag in scalars if tag.startswith(prefix)})
            if not layers:
                continue
            lines.append(f"units quality on {name} (step 0 -> step {step}):")
            lines.append("  layer  " + "  ".join(f"{metric:>22}" for metric in REPORTED))
            for layer in layers:
                cells = []
                for metric in REPORTED:
                    values = dict(scalars.get(f"{prefix}{layer}/{metric}", []))
                    before, after = values.get(0), values.get(step)
                    cells.append(f"{_fmt(before):>10} -> {_fmt(after):>8}")
                lines.append(f"  {layer:>5}  " + "  ".join(cells))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
