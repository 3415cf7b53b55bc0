"""The few torch.distributed operations the trainer needs, all no-ops in a single process.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; we then join a process group (NCCL on GPU, gloo
on CPU). Gradients are all-reduced as one flat buffer after local accumulation rather than
through a DDP wrapper, so ranks may run different numbers of micro-batches in a step.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init() -> tuple[int, int]:
    """(rank, world_size); joins the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _reduce(value: float, op) -> float:
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=op)
    return float(tensor.item())


def _comm_device() -> torch.device:
    return local_device() if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(value: float) -> float:
    return _reduce(value, dist.ReduceOp.SUM if is_distributed() else None)


def all_max(value: float) -> float:
    return _reduce(value, dist.ReduceOp.MAX if is_distributed() else None)


def any_true(flag: bool) -> bool:
    return all_max(1.0 if flag else 0.0) > 0


def global_std(values: torch.Tensor) -> torch.Tensor:
    """Unbiased std over the values of all ranks together."""
    count = all_sum(float(values.numel()))
    mean = all_sum(float(values.sum())) / max(count, 1)
    squares = all_sum(float(((values - mean) ** 2).sum()))
    return torch.tensor((squares / max(count - 1, 1)) ** 0.5, dtype=values.dtype)


def gather_objects(items: list) -> list:
    """Concatenation of every rank's list, on every rank (for logging)."""
    if not is_distributed():
        return list(items)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def broadcast_parameters(model) -> None:
    """Rank 0's weights everywhere, so all ranks start identical."""
    if not is_distributed():
        return
    device = _comm_device()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.device == device:
                dist.broadcast(tensor.data, src=0)
            else:  # e.g. a CPU model before FSDP sharding, with NCCL
                buffer = tensor.data.to(device)
                dist.broadcast(buffer, src=0)
                tensor.data.copy_(buffer)


def all_reduce_gradients(model) -> None:
    """Sum gradients across ranks in one flat buffer (losses are already globally normalised)."""
    if not is_distributed():
        return
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        count = grad.numel()
        parameter.grad = flat[offset : offset + count].view_as(grad).clone()
        offset += count
