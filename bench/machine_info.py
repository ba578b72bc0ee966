"""One JSON line describing this machine and the library versions, for a GPU run's results folder.

    python -m bench.machine_info [SMOKE]

SMOKE is 1 for a CPU smoke run (nvidia-smi is then not asked), 0 or absent otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def main() -> None:
    """Print the host, GPU (from nvidia-smi where there is one), JAX devices and versions."""
    import jax
    import torch

    smoke = sys.argv[1:2] == ["1"]
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        gpu = "" if smoke else subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        gpu = ""
    info = {
        "host": platform.node(),
        "cpu_smoke": smoke,
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "jax_devices": [d.device_kind for d in jax.devices()],
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
