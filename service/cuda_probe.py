"""Whether ONNX Runtime's CUDA provider would really run here, asked without ONNX Runtime.

onnxruntime-gpu lists CUDAExecutionProvider as available even without a GPU, and a session asked
for CUDA where it cannot run makes ORT log an ERROR to stderr before it falls back to the CPU. The
default providers, "auto", therefore ask for CUDA only where this probe finds the device nodes,
the libraries the CUDA provider links (read from its ELF header) and a CUDA device count; an
explicit "cuda" is always tried, and warns or fails loudly as before (runtime.py, loader.py).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import struct
from pathlib import Path

import onnxruntime as ort

from vaeserve.service.config import AUTO_PROVIDERS, Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CUDNN_LIBRARY = "libcudnn.so.9"  # loaded by ORT's CUDA provider on first use, not linked to it


def elf_needed(path: Path) -> list[str]:
    """The DT_NEEDED entries (linked shared libraries) of a 64-bit little-endian ELF file, read
    from its section table (the CUDA provider is hundreds of MB: only these parts are read)."""

    with path.open("rb") as f:

        def read(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)

        header = read(0, 64)
        if header[:6] != b"\x7fELF\x02\x01":
            return []
        (shoff,) = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        table = read(shoff, shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQII", table, i * shentsize) for i in range(shnum)]
        needed = []
        for _name, kind, _flags, _addr, offset, size, link, _info in sections:
            if kind != 6:  # SHT_DYNAMIC; its sh_link is the string table of the names
                continue
            strings = read(sections[link][4], sections[link][5])
            dynamic = read(offset, size)
            for at in range(0, len(dynamic) - 15, 16):
                tag, value = struct.unpack_from("<qQ", dynamic, at)
                if tag == 1:  # DT_NEEDED
                    needed.append(strings[value : strings.index(b"\0", value)].decode())
        return needed


def cuda_usable(device_id: int = 0, dev: Path = Path("/dev")) -> tuple[bool, str]:
    """Whether ORT's CUDA provider would really run on device `device_id`, and why not.

    Asked without ONNX Runtime, because a session asked for CUDA where it cannot run makes ORT
    log an ERROR (libcublasLt missing, ...) to stderr before falling back: CUDA device nodes, the
    libraries the CUDA provider links and cuDNN loading here, and cudaGetDeviceCount seeing the
    device.
    """
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime ({ort.__version__}) has no CUDA provider"
    if not any(dev.glob("nvidia[0-9]*")) and not (dev / "dxg").exists():  # dxg: WSL 2's GPU
        return False, f"no CUDA device ({dev}/nvidia* absent)"
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        libraries = [name for name in elf_needed(provider) if name.startswith("libcu")]
        loaded = {name: ctypes.CDLL(name) for name in [*libraries, CUDNN_LIBRARY]}
    except (OSError, struct.error, ValueError) as exc:
        return False, f"CUDA libraries do not load ({str(exc).splitlines()[0]})"
    cudart = next((lib for name, lib in loaded.items() if name.startswith("libcudart")), None)
    if cudart is None:
        return False, f"{provider.name} links no libcudart"
    count = ctypes.c_int(0)
    status = cudart.cudaGetDeviceCount(ctypes.byref(count))
    if status != 0 or count.value <= device_id:
        return False, f"CUDA sees {count.value} devices (status {status}), not device {device_id}"
    return True, f"{count.value} CUDA devices"


def requested_providers(settings: Settings) -> list[str]:
    """The ORT providers to ask for: the settings', except that "auto" drops CUDA, quietly, where
    `cuda_usable` says no (with `require_gpu` or `tensorrt` it is a GPU asked for: tried)."""
    if settings.providers != AUTO_PROVIDERS or settings.require_gpu or settings.tensorrt:
        return settings.ort_providers
    if _auto_cuda(settings.cuda_device_id):
        return settings.ort_providers
    return [p for p in settings.ort_providers if p != CUDA]


@functools.cache
def _auto_cuda(device_id: int) -> bool:
    """`cuda_usable`, probed and logged once per process (start-up and every reload ask)."""
    usable, why = cuda_usable(device_id)
    log.info("providers auto: %s, %s", why, "using CUDA" if usable else "running on the CPU")
    return usable
