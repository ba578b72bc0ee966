"""Training: configs to train state, the compiled step, the run loop, checkpoints and logs."""
