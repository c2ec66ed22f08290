"""Data-parallel training: how the launcher command is built and which process is "main".

`train_sft` runs unchanged under ``torchrun`` or ``accelerate launch``: TRL's `SFTTrainer` (through
accelerate) finds ``RANK`` / ``WORLD_SIZE`` in the environment and trains DDP (gloo on CPU, NCCL on
GPUs); FSDP or DeepSpeed are TRL fields (``fsdp``, ``fsdp_config``, ``deepspeed``) or accelerate
launch flags. What the project adds is here:

- `Distributed` (the run config's ``distributed`` section) and `launch_command`, the command the
  Pipes client runs. It always goes through ``mrdabak_pipeline.external.launcher``, which watches
  its own parent like the training script does (a killed run worker must not leave a launcher and
  its workers holding the accelerator).
- `per_process_batch`: ``batch_size`` stays the examples per optimizer step, whatever the world
  size (so a 2-process run takes the same steps, with the same contents, as a 1-process run).
- `rank`, `is_main`, `main_process_first`, `barrier`: only rank 0 builds a shared base model,
  reports to Dagster and writes the final model.

Pure: no Dagster import; torch is imported only when a process group exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

Launcher = Literal["torchrun", "accelerate"]
Strategy = Literal["ddp", "fsdp", "deepspeed"]
#: The module that starts ``torchrun`` / ``accelerate launch`` under a parent-death watcher.
LAUNCHER_MODULE = "mrdabak_pipeline.external.launcher"


@dataclass(frozen=True)
class Distributed:
    """How many training processes, on how many machines, started by which launcher.

    ``num_processes`` is per machine (one per GPU; on CPU, processes share the cores).
    ``strategy`` ddp replicates the model; fsdp / deepspeed shard it (models that do not fit one
    GPU): with ``accelerate`` they are launch flags (details in ``accelerate_config``, an
    ``accelerate config`` YAML); with ``torchrun`` give the TRL fields (``fsdp``, ``deepspeed``).
    Several machines need ``main_process_ip`` and the same command on each with its ``machine_rank``.
    """

    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500
    launcher: Launcher = "torchrun"
    strategy: Strategy = "ddp"
    accelerate_config: str | None = None

    def __post_init__(self) -> None:
        if self.num_processes < 1 or self.num_machines < 1:
            raise ValueError("num_processes and num_machines must be >= 1")
        if not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} is not in [0, {self.num_machines})")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("several machines need main_process_ip (the address of machine_rank 0)")
        if self.launcher == "torchrun" and self.strategy != "ddp":
            raise ValueError(f"strategy {self.strategy!r} with torchrun: set the TRL fields instead "
                             "(overrides fsdp / fsdp_config / deepspeed) or use launcher 'accelerate'")

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines


def launch_command(dist: Distributed, module: str, *, python: str = sys.executable) -> list[str]:
    """The command that runs ``python -m module`` as ``dist.world_size`` processes.

    One process: the module itself. Else the `LAUNCHER_MODULE` wrapper, then torchrun's or
    accelerate's own arguments. A single machine uses torchrun's ``--standalone`` rendezvous (a
    free port, so two runs on one box never collide).
    """
    if dist.world_size == 1:
        return [python, "-m", module]
    head = [python, "-m", LAUNCHER_MODULE, dist.launcher]
    if dist.launcher == "torchrun":
        if dist.num_machines == 1:
            nodes = ["--standalone"]
        else:
            nodes = ["--nnodes", str(dist.num_machines), "--node_rank", str(dist.machine_rank),
                     "--master_addr", str(dist.main_process_ip), "--master_port", str(dist.main_process_port)]
        return [*head, *nodes, "--nproc_per_node", str(dist.num_processes), "-m", module]
    args = ["--num_processes", str(dist.world_size), "--num_machines", str(dist.num_machines),
            "--machine_rank", str(dist.machine_rank), "--main_process_port", str(dist.main_process_port)]
    if dist.main_process_ip:
        args += ["--main_process_ip", dist.main_process_ip]
    if dist.accelerate_config:
        args += ["--config_file", dist.accelerate_config]
    # accelerate's --cpu with several processes needs MPI; --multi_gpu goes through torchrun,
    # and the trainer's use_cpu picks gloo when there is no GPU.
    args += {"ddp": ["--multi_gpu"], "fsdp": ["--use_fsdp"], "deepspeed": ["--use_deepspeed"]}[dist.strategy]
    return [*head, *args, "-m", module]


def world_size() -> int:
    """Processes in this training (1 when not launched by torchrun / accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that reports to Dagster and writes the final model."""
    return rank() == 0


def per_process_batch(batch_size: int, processes: int) -> int:
    """Examples per process per optimizer step so that a step still holds ``batch_size`` examples."""
    if batch_size % processes:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {processes} training processes: "
                         "each optimizer step must hold the same examples as a one-process run")
    return batch_size // processes


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def init_process_group(cuda: bool) -> None:
    """Join the launcher's process group early (NCCL on GPUs, gloo on CPU), so ranks can wait for
    rank 0 before the trainer exists; accelerate reuses an initialized group."""
    import torch.distributed as torch_dist

    if world_size() > 1 and not torch_dist.is_initialized():
        if cuda:
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch_dist.init_process_group("nccl" if cuda else "gloo")


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first, the others after it (e.g. rank 0 builds a shared base model,
    the others then find it built). Without a process group: just the block."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
