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
from spidr_jax.evaluate.baseline import mfcc_units_quality
from spidr_jax.evaluate.model_units import codebook_units_quality
from spidr_jax.evaluate.plots import read_scalars
from spidr_jax.evaluate.units_quality import UnitsQuality
from spidr_jax.models import DinoSR
from spidr_jax.models.extractor import conv_output_lengths
from spidr_jax.train.tensorboard import MetricsWriter


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

    def report(self, workdir: Path, step: int, *, baseline_k: int | None = None) -> str:
        """A before/after table (step 0 against `step`) from the run's TensorBoard logs, within 100 columns.

        With `baseline_k`, a last row gives the MFCC k-means baseline's units (K = `baseline_k`) on the same files.
        """
        scalars = read_scalars(workdir)
        lines = []
        for name, (rows, alignments) in self.sets.items():
            prefix = f"{name}/units_layer"
            layers = sorted({int(tag[len(prefix) :].split("/")[0]) for tag in scalars if tag.startswith(prefix)})
            if not layers:
                continue
            lines.append(f"units quality on {name} (step 0 -> step {step}):")
            lines.append("  layer" + "".join(f"{title:>{width}}" for title, width in COLUMNS.values()))
            for layer in layers:
                cells = []
                for metric, (_, width) in COLUMNS.items():
                    values = dict(scalars.get(f"{prefix}{layer}/{metric}", []))
                    cells.append(f"{_fmt(metric, values.get(0))}->{_fmt(metric, values.get(step))}".rjust(width))
                lines.append(f"  {layer:>5}" + "".join(cells))
            if baseline_k is not None:
                quality = mfcc_units_quality(rows, alignments, baseline_k)._asdict()
                cells = [_fmt(metric, quality[metric]).rjust(width) for metric, (_, width) in COLUMNS.items()]
                lines.append("   mfcc" + "".join(cells) + f"   (k-means of MFCCs, K={baseline_k})")
        return "\n".join(lines)


COLUMNS = {  # metric: (title, width)
    "pnmi": ("pnmi", 14),
    "phone_purity": ("phone purity", 14),
    "cluster_purity": ("cluster purity", 16),
    "codebook_perplexity": ("perplexity", 14),
    "active_codewords": ("active", 10),
    "bitrate": ("bitrate", 12),
}


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in {"active_codewords", "bitrate"}:
        return f"{value:.0f}"
    return f"{value:.1f}" if metric == "codebook_perplexity" else f"{value:.3f}"
