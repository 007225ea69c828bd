"""What this machine's CPU can do, without torch: the instruction-set flags that decide whether bf16 and int8 run
fast (stated beside every figure the project measures)."""
from __future__ import annotations

import os
import platform
from importlib import metadata

# the flags that matter here: AVX2 (the baseline), AVX-512, VNNI (int8 dot products), BF16 and AMX (matrix tiles)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS says, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_threads(threads: int | None, workers: int) -> int:
    """onnxruntime's threads for a model: ``threads`` when given; with ``workers`` preprocessing processes beside
    it, the cores they leave (at least one), so that the two do not compete for the same cores (a spinning
    onnxruntime thread pool starves the workers); otherwise 0, the library's own choice (every core). PyTorch's
    thread count is process-wide and is changed only by an explicit --threads."""
    if threads:
        return threads
    return max(1, usable_cores() - workers) if workers else 0


def onnx_layout(threads: int | None, workers: int, graph: bool) -> tuple[int, int, bool]:
    """How onnxruntime runs a model beside ``workers`` preprocessing processes: (threads per call, calls in flight
    together, whether idle threads spin). A ``graph`` that runs the band-pass and z-score itself leaves its workers
    little to do, so the model gets every core: one single-thread call per core, in flight together (two cores:
    0.90x the wall time of one call on both, whose threads wait for each other at every operator; bench/README.md,
    "Preprocessing in the graph"). Otherwise one call on :func:`model_threads`, its idle threads yielding to the
    workers where they share the cores. ``threads`` given: one call on them."""
    if graph and workers and not threads:
        return 1, usable_cores(), False
    return model_threads(threads, 0 if graph else workers), 1, not (graph and workers)


def cpu_flags() -> list[str]:
    """Those of ``FLAGS`` the CPU has (empty where /proc/cpuinfo cannot be read)."""
    found = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            found.update(line.split(":", 1)[1].split())
            break
    return [flag for flag in FLAGS if flag in found]


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fast_int8() -> bool:
    """VNNI or AMX: where int8 convolutions run several times faster than fp32."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()))


def fast_bf16() -> bool:
    """AMX or AVX512-BF16: where oneDNN runs bf16 convolutions several times faster than fp32."""
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_flags()))


def project_version() -> str:
    """This project's version (pyproject.toml, as installed), or 'unknown'."""
    try:
        return metadata.version("ecg-age")
    except metadata.PackageNotFoundError:
        return "unknown"
