"""Training in several processes: `accelerate launch` or `torchrun` start one `teambot train` per
GPU (or per CPU process, gloo); transformers' Trainer wraps the model in DistributedDataParallel
and shards the batches. Everything that writes (the run directory, config, metrics, the adapter)
happens on the main process only, after the others have finished their part.

One process that sees several GPUs would fall into `nn.DataParallel` (one process driving every
GPU, slower than one GPU for LoRA and incompatible with the custom loss): it trains on one GPU and
says how to use all of them.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def state():
    """accelerate's PartialState: starts the process group under a launcher (gloo on the CPU).

    It is a singleton: created first here, it must already be what the Trainer would create
    (`use_cpu` → cpu=True), or a CPU launch would leave each process training alone."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def share(value, process_state):
    """The main process's `value`, on every process."""
    if process_state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def launch_command(gpus: int) -> str:
    return f"accelerate launch --num_processes {gpus} -m teambot.cli train …"


def single_process_gpus(args, log) -> None:
    """Keep one process on one GPU: transformers would otherwise wrap the model in DataParallel."""
    if world_size() == 1 and args.n_gpu > 1:
        log(f"{args.n_gpu} GPUs are visible, and one process trains on one of them; to train on all "
            f"{args.n_gpu}: {launch_command(args.n_gpu)} (see the README)")
        args._n_gpu = 1
