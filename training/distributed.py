"""More than one training process: torchrun detection, the process group and its collectives.

`vaeserve train` under `torchrun` (which sets WORLD_SIZE, RANK and LOCAL_RANK) trains with
DistributedDataParallel: gloo on the CPU, NCCL on CUDA (one device per process, cuda:LOCAL_RANK).
Without torchrun, or with WORLD_SIZE=1, `session` yields a single-process handle whose methods
do nothing, so `train()` runs exactly as it always did. The environment is read when `session`
is entered, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from vaeserve.errors import UserError

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedUnavailable(UserError, RuntimeError):
    """torchrun asked for more than one process, but this torch cannot run a process group."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank 0 is the one that writes files and logs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """"gloo" or "nccl" when a process group is up; None for a single process."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> str:
        """The device this process trains on: each CUDA process gets its own, cuda:LOCAL_RANK."""
        if self.enabled and name.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return name

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all processes, in place (every process gets the same result)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, values: Mapping[str, float], device: torch.device) -> dict[str, float]:
        """Per-process float accumulators summed over all processes (in float64, one call)."""
        if not self.enabled:
            return dict(values)
        keys = list(values)
        total = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        self.all_reduce_sum(total)
        return {k: float(v) for k, v in zip(keys, total.tolist(), strict=True)}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process (pickled), so every rank decides on the same values."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_environment(environ: Mapping[str, str] | None = None) -> Distributed:
    """The rank, world size and local rank torchrun gives this process; a single process when
    the variables are absent."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return Distributed()
    try:
        world_size, rank, local_rank = (int(env.get(name, "0")) for name in TORCHRUN_VARS)
    except ValueError:
        raise DistributedUnavailable(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them), got "
            + ", ".join(f"{n}={env.get(n)!r}" for n in TORCHRUN_VARS)
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedUnavailable(f"RANK {rank} is outside WORLD_SIZE {world_size}")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


@contextmanager
def session(device: str, environ: Mapping[str, str] | None = None) -> Iterator[Distributed]:
    """The process group for one training run, torn down on the way out (also on errors).

    A process group that is already up (a caller that set one up itself) is used as it is and
    left up."""
    here = from_environment(environ)
    if not here.enabled:
        yield here
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_available() or (backend == "gloo" and not dist.is_gloo_available()):
        raise DistributedUnavailable(
            f"WORLD_SIZE={here.world_size}, but torch {torch.__version__} has no "
            f"torch.distributed {backend} backend"
        )
    if backend == "nccl":
        if not torch.cuda.is_available() or torch.cuda.device_count() <= here.local_rank:
            raise DistributedUnavailable(
                f"--device {device} with LOCAL_RANK {here.local_rank}: torch sees "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices; "
                "run at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(here.local_rank)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend)
    here = Distributed(here.rank, here.world_size, here.local_rank, dist.get_backend())
    try:
        yield here
    finally:
        if owned:
            dist.destroy_process_group()


def noise_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's posterior noise in one epoch: a function of (seed, epoch,
    rank) alone, so a resumed run redraws exactly the noise it would have drawn, without any
    per-rank generator state in the checkpoint."""
    words = [seed % 2**64, epoch, rank]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def shard(indices: np.ndarray, dist_info: Distributed) -> np.ndarray:
    """This process's share of one global batch (np.array_split: sizes differ by at most 1)."""
    if not dist_info.enabled:
        return indices
    return np.array_split(indices, dist_info.world_size)[dist_info.rank]
