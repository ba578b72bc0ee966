"""Submit training and extraction jobs to SLURM: `python -m spidr_jax.launch` (see launch/README.md).

The configs are checked on the submitting machine first, then each job runs `launch/slurm_gpu.sbatch` (copied into
the dump folder with the resolved config) through `sbatch --parsable`.
"""
