"""Unit-quality evaluation: phone purity, cluster purity, PNMI, perplexity, bitrate, ABX."""
