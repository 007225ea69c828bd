"""Device, precision, seeding and torch.distributed set-up: a few plain functions the interfaces call."""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import random
import warnings

import numpy as np
import torch
import torch.distributed as dist

from .machine import fast_bf16
from .ranks import barrier, is_local_main, is_main  # noqa: F401 - part of the runtime's interface


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU. An unavailable explicit choice falls back to CPU with a warning."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not has_mps:
        warnings.warn(f"--device {name} requested but not available here; running on the CPU instead")
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: where oneDNN runs bf16 convolutions several times faster than fp32."""
    return fast_bf16()


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def precision_reason(name: str, device: torch.device, precision: str) -> str:
    """Why a run computes in ``precision``: said at its start, so that a number is never read without it."""
    if name != "auto":
        return f"precision {precision} (--precision {name})"
    where = {"cuda": "this GPU supports bf16" if precision == "bf16" else "this GPU lacks bf16",
             "cpu": "this CPU has AMX or AVX-512 BF16" if precision == "bf16" else "this CPU has no fast bf16"}
    because = where.get(device.type, f"{device.type} runs fp32")
    return (f"precision {precision} (--precision auto: {because}; the output layer and the loss stay fp32; "
            f"--precision fp32 gives the reference arithmetic)")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def place_model(model: torch.nn.Module, device: torch.device, fast_layout: bool, training: bool) -> torch.nn.Module:
    """Move to ``device``. With ``fast_layout`` (everything but an explicit ``--precision fp32``), 2-D convolution
    models (ResDenseNet) run channels-last: on CUDA always, on the CPU for inference (1.28× there, measured; no
    gain for training). ``--precision fp32`` keeps the reference layout."""
    model = model.to(device)
    has_2d_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if fast_layout and has_2d_conv and (device.type == "cuda" or not training):
        model = model.to(memory_format=torch.channels_last)
    return model


def default_infer_batch(device: torch.device, batch_size: int) -> int:
    """Inference batch: large on GPUs; small on CPUs, where ResDenseNet runs fastest per ECG at batches ≤ 8."""
    return 4 * batch_size if device.type == "cuda" else min(8, batch_size)


def configure_backends(device: torch.device, precision: str, deterministic: bool, threads: int | None = None) -> None:
    """fp32 stays exact (no TF32) so that fp32 runs reproduce reference outputs; bf16 runs enable TF32 for the
    few ops left in fp32. ``threads``: PyTorch's CPU threads (None: its own choice)."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "bf16"
        torch.backends.cudnn.allow_tf32 = precision == "bf16"
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """RNG states as plain tensors/lists so that checkpoints load with ``weights_only=True``."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- torch.distributed (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) ----------------
def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Single process when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        # long enough for rank 0 to build a large preprocessing cache while the others wait at a barrier
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=4))
    return rank, world, device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum scalars across ranks (float64, so counts and error sums stay exact)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_arrays(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Each array concatenated over the ranks (rank order); the arrays themselves without torch.distributed."""
    if not dist.is_initialized():
        return arrays
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [np.asarray(a) for a in arrays])
    return [np.concatenate([part[i] for part in gathered]) for i in range(len(arrays))]


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank 0's BatchNorm statistics (DDP ranks update them on their own batches), so that
    validation on any rank uses exactly the weights that rank 0 saves."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=src)


def cleanup_distributed() -> None:
    """End a distributed run cleanly: every rank past its last collective (a barrier, so no rank closes its
    connections while a peer still reads from them), the objects that hold the process group (DDP wrappers in
    reference cycles) collected, then the group destroyed while the interpreter is fully alive — a group left to
    interpreter shutdown can abort the process (SIGABRT) after its work is done."""
    if dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
