"""The command line, `python -m spidr_jax.demo.build_corpus`: build the corpus and print a summary.

`build` runs the steps in order: synthesize the planned utterances, check their timing, write the files, then
the README. `main` parses the arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from spidr_jax.demo import corpus_dir
from spidr_jax.demo.corpus_builder.checks import TimingReport, check_timing
from spidr_jax.demo.corpus_builder.espeak import Espeak
from spidr_jax.demo.corpus_builder.plan import SAMPLE_RATE, BuildOptions
from spidr_jax.demo.corpus_builder.readme import write_readme
from spidr_jax.demo.corpus_builder.synthesis import Utterance, synthesize_corpus
from spidr_jax.demo.corpus_builder.writers import folder_megabytes, write_corpus
from spidr_jax.errors import exit_on_user_error


def build(output: Path, options: BuildOptions, library: str | None = None) -> tuple[list[Utterance], TimingReport]:
    """Generate the corpus into `output`."""
    espeak = Espeak(library)
    utterances = synthesize_corpus(options, espeak)
    timing = check_timing(utterances)
    write_corpus(utterances, output)
    write_readme(utterances, output, options, espeak, timing)
    return utterances, timing


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m spidr_jax.demo.build_corpus",
        description="Regenerate the demo corpus: espeak-ng speech with the synthesizer's own phone alignments.",
    )
    defaults = BuildOptions()
    parser.add_argument("--output", type=Path, default=corpus_dir(), help="corpus folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    parser.add_argument(
        "--num-utterances", type=int, default=defaults.num_utterances, help="utterances in all (default: %(default)s)"
    )
    parser.add_argument(
        "--dev-fraction",
        type=float,
        default=defaults.dev_fraction,
        help="share of dev utterances (default: %(default)s)",
    )
    parser.add_argument(
        "--bits", type=int, default=defaults.bits, help="significant bits kept per sample (default: %(default)s)"
    )
    parser.add_argument("--library", help="path to libespeak-ng (default: the system's, else espeakng-loader's)")
    args = parser.parse_args(argv)
    if not 8 <= args.bits <= 16:
        parser.error("--bits must be between 8 and 16")
    options = BuildOptions(
        seed=args.seed, num_utterances=args.num_utterances, dev_fraction=args.dev_fraction, bits=args.bits
    )
    with exit_on_user_error():
        utterances, timing = build(args.output, options, args.library)
    seconds = sum(u.num_samples for u in utterances) / SAMPLE_RATE
    num_dev = sum(u.split == "dev" for u in utterances)
    print(
        f"{args.output}: {len(utterances) - num_dev} train + {num_dev} dev utterances, {seconds:.0f} s, "
        f"{folder_megabytes(args.output):.2f} MB; timing: {timing.onsets_at_events}/{timing.onsets} onsets on "
        f"events, {timing.pause_silent:.1%} of pause frames silent, best label lag {timing.best_lag_ms:+d} ms"
    )
