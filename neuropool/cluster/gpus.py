"""How many CUDA GPUs this machine has, without importing a GPU library."""

from __future__ import annotations

import shutil
import subprocess


def count_gpus() -> int:
    """Number of GPUs ``nvidia-smi -L`` lists; 0 when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
