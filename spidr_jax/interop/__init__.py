"""Interoperability with the PyTorch reference: state_dict layout, fairseq checkpoints, .pt files."""
