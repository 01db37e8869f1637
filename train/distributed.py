"""Multi-process training under ``torchrun``: DistributedDataParallel, one process per device.

``torchrun --nproc-per-node N -m train tissue ...`` starts N copies of the same command;
torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address, which
:func:`from_env` reads (without them, or with ``WORLD_SIZE=1``, training is the single-process
loop of :func:`train.engine.fit`, unchanged). Backend: NCCL on GPUs (process ``LOCAL_RANK``
drives ``cuda:LOCAL_RANK``), gloo on CPUs.

What changes with N processes (see docs/distributed.md):

- ``--batch-size`` stays the *global* batch: each process takes ``batch_size / N`` images
  per step from a :class:`~torch.utils.data.distributed.DistributedSampler` (seeded with the
  run's seed and reshuffled each epoch), whose global batches are those of a single-process
  run (:func:`epoch_sampler`); gradients are averaged across processes, so one step sees the
  same images as the single-process run.
- Batch-norm statistics are computed per process (on ``batch_size / N`` images) and rank 0's
  running statistics are broadcast at each forward (DDP's default), and a loss that is not a
  mean over images (the tissue stage's soft Dice) is computed per process: with small
  per-process batches the weights differ from a single-process run by that much (measured in
  docs/distributed.md; with batch norm frozen and a per-pixel loss they agree to float
  rounding). SyncBatchNorm is refused by DDP on CPUs.
- The training loss is summed over all processes; validation runs on rank 0 and its metrics
  are broadcast, so every process takes the same best-epoch and early-stopping decisions.
- Only rank 0 writes checkpoints, ``history.json`` and TensorBoard scalars; ``--resume``
  loads ``last.pt`` in every process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


@dataclass
class DistContext:
    """This process's place in a torchrun job: ``rank`` of ``world`` processes, its ``device``."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and runs validation."""
        return self.rank == 0


def from_env(device_name: str = "auto") -> Optional[DistContext]:
    """The torchrun job this process belongs to (process group initialised), or None when not
    launched by torchrun (``WORLD_SIZE`` unset or 1).

    ``device_name`` as ``--device``: 'auto' (CUDA when available), 'cpu', 'cuda' (the
    process's ``LOCAL_RANK`` picks the GPU). Raises RuntimeError when CUDA is asked for but
    this node has fewer GPUs than processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device_name == "auto" else device_name.startswith("cuda")
    if cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process with LOCAL_RANK {local} has no GPU: {torch.cuda.device_count()} on this node; "
                               f"use --nproc-per-node <= the GPU count")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, device, backend)


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``model`` (already on ``ctx.device``) in DistributedDataParallel; rank 0's parameters and
    buffers are broadcast to every process here."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def train_loader(ds: Dataset, global_batch: int, ctx: DistContext, seed: int, workers: int) -> DataLoader:
    """This process's share of the training set: ``global_batch / world`` images per step from a
    :class:`DistributedSampler` (shuffled with ``seed``; call ``loader.sampler.set_epoch(e)``).
    Raises ValueError when ``global_batch`` is not a multiple of the process count."""
    if global_batch % ctx.world:
        raise ValueError(f"--batch-size {global_batch} is the global batch: it must be a multiple of the "
                         f"{ctx.world} processes")
    per_rank = global_batch // ctx.world
    sampler = DistributedSampler(ds, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
    return DataLoader(ds, batch_size=per_rank, sampler=sampler, drop_last=len(sampler) > per_rank,
                      num_workers=workers, generator=torch.Generator().manual_seed(seed))


def epoch_sampler(ds: Dataset, seed: int) -> DistributedSampler:
    """The single-process order: the permutation ``torch.randperm(len(ds))`` seeded with
    ``seed + epoch`` (call ``set_epoch(e)``), which a torchrun job deals out to its processes
    (process r takes positions r, r + N, ...): step k of both sees the same ``batch`` images
    ``order[k * batch:(k + 1) * batch]``."""
    return DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=seed)


def sum_over_ranks(total: float, n: int, ctx: DistContext) -> Tuple[float, int]:
    """(sum of ``total``, sum of ``n``) over all processes (float64 all-reduce)."""
    t = torch.tensor([total, float(n)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t[0]), int(t[1])


def from_main(obj, ctx: DistContext):
    """Rank 0's ``obj`` (plain Python values) in every process."""
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def check_replicas(model: torch.nn.Module, ctx: DistContext) -> None:
    """Raise RuntimeError unless every process holds the same weights (what DDP guarantees;
    checked once at the end of training: a float64 sum of each process's parameters)."""
    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(s) for _ in range(ctx.world)]
    dist.all_gather(gathered, s)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"replicas diverged: parameter sums {[float(g) for g in gathered]}")


def close(ctx: Optional[DistContext]) -> None:
    """Leave the process group (after the last collective)."""
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def metrics_from_main(metrics: Optional[Dict[str, float]], ctx: DistContext) -> Dict[str, float]:
    """Rank 0's validation metrics in every process (only rank 0 evaluates)."""
    return from_main(metrics, ctx)
