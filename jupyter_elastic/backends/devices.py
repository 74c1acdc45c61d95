"""What accelerators this machine has, found without creating a CUDA context.

NVML (``nvidia-ml-py``) when installed, else ``nvidia-smi``; with neither (a compute-only
container that has the CUDA driver but no management tools) CuPy's runtime device count,
when CuPy is importable and ``cupy.is_available()``. No GPU, no driver or no tool all mean
an empty list.

``CUDA_VISIBLE_DEVICES`` restricts the list as CUDA would: entries are device indices or
``GPU-…``/``MIG-…`` UUIDs (a unique prefix is enough), in the mask's order, and the first
entry that names no device ends the list. When a GPU is in MIG mode, CUDA sees its MIG
instances, not the GPU itself, so the instances are listed as devices (``mig=True``, with
the UUID that ``CUDA_VISIBLE_DEVICES`` needs to select them).

Device order: NVML and ``nvidia-smi`` number GPUs in PCI bus order. CUDA numbers them
``FASTEST_FIRST`` unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; on the usual node of identical
GPUs both orders agree (fastest-first breaks ties by PCI bus id). Workers are pinned by
:attr:`GPU.visible_id`, which is the UUID whenever one is known, so a mixed node pins the
right device whatever the order; an index mask on such a node is read in PCI order (set
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` to make CUDA agree).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    """One visible GPU, or one MIG instance of a GPU in MIG mode."""

    index: int
    name: str
    memory: int  # bytes
    uuid: str = ""
    mig: bool = False
    #: What ``CUDA_VISIBLE_DEVICES`` must say to select this device ("" = ``str(index)``).
    selector: str = ""

    @property
    def visible_id(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` entry for this device: its UUID when known."""
        return self.selector or self.uuid or str(self.index)


def _visible(gpus: list[GPU]) -> list[GPU]:
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return gpus
    chosen: list[GPU] = []
    for entry in (m.strip() for m in mask.split(",")):
        if entry.isdigit():
            whole = [g for g in gpus if not g.mig]
            found = whole[int(entry)] if int(entry) < len(whole) else None
        elif entry.upper().startswith(("GPU-", "MIG-")):
            matches = [g for g in gpus if g.uuid.lower().startswith(entry.lower())]
            found = matches[0] if len(matches) == 1 else None
        else:
            found = None
        if found is None:  # CUDA stops at the first entry that names no device
            break
        if found not in chosen:
            chosen.append(found)
    return chosen


def _from_nvml() -> list[GPU] | None:
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        found: list[GPU] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            instances = _nvml_mig(pynvml, handle, name)
            found.extend(instances)
            found.append(GPU(i, name, memory, uuid))
        return _renumber(found)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_mig(pynvml: object, handle: object, parent: str) -> list[GPU]:
    """The MIG instances of a GPU in MIG mode (empty otherwise, or without MIG support)."""
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)  # type: ignore[attr-defined]
    except Exception:
        return []
    if not current:
        return []
    out = []
    for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):  # type: ignore[attr-defined]
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)  # type: ignore[attr-defined]
        except Exception:
            continue
        uuid = _text(pynvml.nvmlDeviceGetUUID(mig))  # type: ignore[attr-defined]
        memory = int(pynvml.nvmlDeviceGetMemoryInfo(mig).total)  # type: ignore[attr-defined]
        out.append(GPU(-1, f"{parent} MIG", memory, uuid, mig=True))
    return out


def _renumber(found: list[GPU]) -> list[GPU]:
    """Drop GPUs in MIG mode (CUDA sees their instances instead) and number MIG instances."""
    out: list[GPU] = []
    mig_index = 0
    pending: list[GPU] = []
    for g in found:
        if g.mig:
            pending.append(g)
            continue
        if pending:
            for m in pending:
                out.append(GPU(mig_index, m.name, m.memory, m.uuid, mig=True))
                mig_index += 1
            pending = []
            continue
        out.append(g)
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_MIG_LINE = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s+\(UUID:\s*(MIG-[^)\s]+)\)")
_GPU_LINE = re.compile(r"^GPU\s+(\d+):.*\(UUID:\s*(GPU-[^)\s]+)\)")


def _from_nvidia_smi() -> list[GPU] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus: dict[str, GPU] = {}
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            memory = int(float(parts[3])) * 1024**2 if _number(parts[3]) else 0
            gpus[parts[0]] = GPU(int(parts[0]), parts[2], memory, parts[1])
    migs = _nvidia_smi_mig(exe)
    found: list[GPU] = []
    for index, gpu in gpus.items():
        for profile, uuid in migs.get(index, []):
            found.append(GPU(-1, f"{gpu.name} MIG {profile}", _profile_bytes(profile), uuid, True))
        found.append(gpu)
    return _renumber(found)


def _nvidia_smi_mig(exe: str) -> dict[str, list[tuple[str, str]]]:
    """GPU index -> [(MIG profile, MIG UUID)] from ``nvidia-smi -L``."""
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    migs: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in out.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            current = gpu.group(1)
            continue
        mig = _MIG_LINE.match(line)
        if mig and current is not None:
            migs.setdefault(current, []).append((mig.group(1), mig.group(3)))
    return migs


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _profile_bytes(profile: str) -> int:
    """Memory of a MIG profile such as ``1g.10gb`` (0 when the name does not say)."""
    match = re.search(r"(\d+)gb", profile)
    return int(match.group(1)) * 1024**3 if match else 0


def _from_cuda_runtime() -> list[GPU]:
    """CuPy's view (CUDA order, mask already applied): for containers without NVML tools."""
    try:
        import cupy  # noqa: PLC0415
    except Exception:
        return []
    try:
        if not cupy.is_available():
            return []
        count = cupy.cuda.runtime.getDeviceCount()
        mask = [m.strip() for m in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
        found = []
        for i in range(count):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = _text(props.get("name", b"GPU"))
            selector = mask[i] if i < len(mask) and mask[i] else str(i)
            found.append(GPU(i, name, int(props.get("totalGlobalMem", 0)), selector=selector))
        return found
    except Exception:
        return []


def detect_gpus() -> list[GPU]:
    """The GPUs (or MIG instances) this process may use (empty on a machine without any)."""
    gpus = _from_nvml()
    if gpus is None:
        gpus = _from_nvidia_smi()
    if gpus is None:
        return _from_cuda_runtime()  # already in CUDA's view: the mask is applied
    return _visible(gpus)
