"""Conversion between the PyTorch reference's checkpoints and converted model directories.

    python -m spidr_jax.convert torch-to-orbax --model spidr spidr_base.pt converted/spidr_base
    python -m spidr_jax.convert orbax-to-torch converted/spidr_base spidr_base_roundtrip.pt

`conversion` converts; `torch_layout` maps the reference's state_dict to the model's tree and back, `fairseq` reads
the original DinoSR checkpoint, and `torch_files` reads and writes `.pt` files.
"""
