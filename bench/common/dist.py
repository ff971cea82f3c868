"""torchrun support for every harness (`torchrun --nproc-per-node K -m bench.<harness> ...`): each rank joins one
process group (nccl on cuda:LOCAL_RANK, gloo on the CPU); rank 0 writes the files. A plain process is world 1,
rank 0, and every helper is then a no-op, so callers never branch on it."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from bench.common.cli import UsageError, env_value, nonneg_int, positive_int

# ranks finish their shares at different times; the final barrier may wait for hours
BARRIER_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def join(self, device_type: str) -> "Dist":
        if not self.enabled:
            return self
        if not dist.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(self.local_rank)
                dist.init_process_group("nccl", timeout=BARRIER_TIMEOUT,
                                        device_id=torch.device("cuda", self.local_rank))
            else:
                dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        return replace(self, backend=dist.get_backend())

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [rank * b, (rank + 1) * b) of a global batch of world * b rows."""
        b = x.shape[0] // self.world
        return x[self.rank * b:(self.rank + 1) * b] if self.enabled else x

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        box = [obj]
        if self.enabled:
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        out = [obj] * self.world
        if self.enabled:
            dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(device_ids=[self.local_rank]) if dist.get_backend() == "nccl" else dist.barrier()

    def finish(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def from_env() -> Dist:
    """The rank layout torchrun set in the environment; a plain process is world 1, rank 0. A malformed or partial
    layout (a WORLD_SIZE left in the shell) is a UsageError naming the variable, not a traceback from torch."""
    world = env_value("WORLD_SIZE", positive_int, "1")
    if world == 1:
        return Dist()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise UsageError(f"WORLD_SIZE is {world} but torchrun's other variables are not set ({', '.join(missing)}): "
                         f"start the run with torchrun --nproc-per-node {world} -m bench.<harness> ..., or unset "
                         "WORLD_SIZE")
    return Dist(world, env_value("RANK", nonneg_int, "0"), env_value("LOCAL_RANK", nonneg_int, "0"),
                env_value("LOCAL_WORLD_SIZE", positive_int, str(world)))
