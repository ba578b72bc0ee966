"""Regenerate the bundled demo corpus (`spidr_jax/demo/corpus/`) with espeak-ng.

    python -m spidr_jax.demo.build_corpus                  # rewrites spidr_jax/demo/corpus/
    python -m spidr_jax.demo.build_corpus --output /tmp/c --num-utterances 24
    python -m spidr_jax.demo.build_corpus --help

The generator lives in the `spidr_jax.demo.corpus_builder` package, whose docstring describes its steps; the
mapping of espeak-ng phonemes to phone labels (`IPA_TO_PHONE`) is in `corpus_builder/phones.py`.
"""

from __future__ import annotations

from spidr_jax.demo.corpus_builder.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
