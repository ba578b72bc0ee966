"""Data: manifests, audio decoding, span masks, static-shape batching and the Grain pipeline."""
