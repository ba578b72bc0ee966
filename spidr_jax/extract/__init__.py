"""Extraction of features or discrete units of one layer for every file of a manifest.

    python -m spidr_jax.extract --checkpoint converted/spidr_base --manifest dev.csv --output feats --layer 6

`cli` parses the command line; `run` extracts this process's share of the manifest (`processes`) with the model
run over padded batches (`inference`), into an output directory that records its settings (`settings`) and holds
only complete files (`units_file`, `features_file`), then renders the units for the next tools (`unit_formats`).
"""
