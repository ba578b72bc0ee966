"""Train SpidR or DinoSR.

    python -m spidr_jax.train --config=configs/base.py --config.run.workdir=runs/base --config.data.manifest=train.csv

Any field can be overridden (`--config.optimizer.max_steps=40`); a reference TOML run config works as
`--config=configs/toml.py:run.toml`. Restarting the same command resumes from the newest checkpoint.

Every section and field, with its value for a config: `python -m spidr_jax.config --config=configs/base.py`.
Config files: configs/base.py (SpidR), configs/dinosr.py, configs/tiny.py (a small SpidR for CPUs), configs/demo.py.
Exit codes: 0 when done (or stopped by SIGTERM after its checkpoint: 143), 1 on a fault (one line names it), 2 on a
bad config, 130 on Ctrl-C.
"""

from __future__ import annotations

import sys

from spidr_jax.config.cli import parse_config_or_exit, require_fields
from spidr_jax.errors import exit_on_user_error
from spidr_jax.storage.orbax_noise import quiet_closed_loop_tracebacks
from spidr_jax.train.loop import train
from spidr_jax.train.signals import INTERRUPTED


def main(argv: list[str] | None = None) -> None:
    """Parse the config, then run the training; one clear line and exit code 1 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print("usage: python -m spidr_jax.train --config=FILE[:ARG] [--config.SECTION.FIELD=VALUE ...]")
        print(__doc__)
        return
    cfg = parse_config_or_exit(args, strict=True)
    quiet_closed_loop_tracebacks()  # a failed checkpoint write is reported in one line, without Orbax's echoes
    try:
        with exit_on_user_error():  # a disk full, a read-only or missing workdir too: the message names the path
            require_fields(cfg, ["run.workdir", "data.manifest"])
            result = train(cfg)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)  # Ctrl-C before the training loop
        sys.exit(130)
    if result.stopped_by_signal is not None:
        sys.exit(128 + result.stopped_by_signal)


if __name__ == "__main__":
    main()
