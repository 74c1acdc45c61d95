"""What accelerators this machine has, found without creating a CUDA context.

NVML (``nvidia-ml-py``) when installed, else ``nvidia-smi``; ``CUDA_VISIBLE_DEVICES``
restricts the list as CUDA would. No GPU, no driver or no tool all mean an empty list.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    """One visible GPU."""

    index: int
    name: str
    memory: int  # bytes


def _visible(gpus: list[GPU]) -> list[GPU]:
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return gpus
    wanted = [m.strip() for m in mask.split(",") if m.strip() and m.strip() != "-1"]
    by_index = {str(g.index): g for g in gpus}
    return [by_index[w] for w in wanted if w in by_index]


def _from_nvml() -> list[GPU] | None:
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            found.append(GPU(i, name.decode() if isinstance(name, bytes) else name, int(memory)))
        return found
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[GPU]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            found.append(GPU(int(parts[0]), parts[1], int(float(parts[2])) * 1024**2))
    return found


def detect_gpus() -> list[GPU]:
    """The GPUs this process may use (empty on a machine without any)."""
    gpus = _from_nvml()
    if gpus is None:
        gpus = _from_nvidia_smi()
    return _visible(gpus)
