"""torchrun support: `torchrun --nproc-per-node K -m bench.scaling ...`.

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK (and the rendezvous variables). Each rank runs on
cuda:LOCAL_RANK (nccl) or on the CPU (gloo), takes the lengths grid.rank_of_group deals it, writes
parts/timings.rank<R>.csv; after a barrier rank 0 merges the parts into timings.csv and writes
env.json, summary and plots.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

# ranks finish their shares at different times; the final barrier may wait for hours
BARRIER_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """From torchrun's environment variables; a plain process is world 1, rank 0."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def init(info: DistInfo, device_type: str) -> None:
    """Join the process group: nccl on CUDA (after selecting cuda:LOCAL_RANK), gloo on CPU."""
    if not info.active:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl", timeout=BARRIER_TIMEOUT, device_id=torch.device("cuda", info.local_rank))
    else:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)


def broadcast(obj, info: DistInfo):
    """rank 0's obj on every rank."""
    if not info.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj, info: DistInfo) -> list:
    if not info.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if not info.active:
        return
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[info.local_rank])
    else:
        dist.barrier()


def finish(info: DistInfo) -> None:
    if not info.active:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
