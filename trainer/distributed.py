"""Data-parallel training across processes launched by torchrun (gloo: CPU-only machines too).

`torchrun --standalone --nproc_per_node 2 -m trainer train ...` runs one trainer per process; each
takes its own slice of every global batch, DistributedDataParallel averages the gradients, and
rank 0 alone writes the model file. A single process (no torchrun) runs exactly as before.
"""
import os

import torch.distributed as dist


def start() -> tuple[int, int]:
    """(rank, world size); joins the process group when torchrun started more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return rank_and_size()


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
