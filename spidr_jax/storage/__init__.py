"""What spidr_jax writes to disk, in one place.

A converted model directory (`python -m spidr_jax.convert torch-to-orbax`), read and written by `model_dir`:

    config.json   {"format": ..., "run": {"model_type": "spidr"|"dinosr"}, "model": {reference model fields}}
    state/        Orbax pytree: the model's full state (student, teacher, heads, codebooks, mask embedding, step)

A training workdir keeps its checkpoints under `checkpoints/<step>/`, each with three items (`checkpoint_items`):

    model/        Orbax pytree {"params", "teacher", "codebooks", "step"}: restored alone (no teacher) for inference
    training/     Orbax pytree {"opt_state", "rng", "loss_scale"}: the rest of the train state
    meta/         JSON: step, data seed, and the checksum of every array of the two items above (`checksums`)

A k-means model (`python -m spidr_jax.kmeans fit`) is a `km.npz` (`kmeans_file`): the centroids, K, the layer, the
checkpoint they were fitted on, the inertia of every epoch. Locks (`run_lock`) keep one run per directory.

Checkpoints written before the split hold one item `state/` (the whole train state, no checksums); they are read
as before. Files written under a temporary name and renamed (`atomic`) get the permissions the umask gives
(`file_modes`); `orbax_noise` keeps Orbax's and TensorStore's echoes of a failure off the user's screen.
"""
