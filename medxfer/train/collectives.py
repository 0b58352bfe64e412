"""What ranks exchange besides gradients: summed epoch counters, gathered validation outputs,
rank 0's batch-norm statistics.

Why apart from the trainees: every stage's epoch reports numbers summed over the ranks (images,
seconds, loss), and each trainee (:mod:`medxfer.supervised.classifier_trainee`,
:mod:`medxfer.ssl.trainee`) calls the same helpers; each is a no-op in one process.
"""

from __future__ import annotations

import torch


def all_gather(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_across_workers(values: list[float]) -> list[float]:
    """``values`` summed element-wise over the ranks (unchanged without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(model: torch.nn.Module, world: int) -> None:
    """Rank 0's batch-norm statistics on every rank, so all ranks validate the same weights."""
    import torch.distributed as dist

    if world > 1 and dist.is_available() and dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b.data, src=0)
