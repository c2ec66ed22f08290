"""`core.training.distributed`: the launcher command and the per-process batch."""

from __future__ import annotations

import pytest

from mrdabak_pipeline.core.training.distributed import (
    LAUNCHER_MODULE,
    Distributed,
    launch_command,
    per_process_batch,
)

M = "mrdabak_pipeline.external.train_entry"


def test_one_process_runs_the_module_itself() -> None:
    assert launch_command(Distributed(), M, python="py") == ["py", "-m", M]


def test_torchrun_on_one_machine_uses_a_standalone_rendezvous() -> None:
    cmd = launch_command(Distributed(num_processes=2), M, python="py")
    assert cmd == ["py", "-m", LAUNCHER_MODULE, "torchrun", "--standalone", "--nproc_per_node", "2", "-m", M]


def test_several_machines_name_the_main_one() -> None:
    cmd = launch_command(Distributed(num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1"),
                         M, python="py")
    assert cmd[4:12] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29500"]
    with pytest.raises(ValueError, match="main_process_ip"):
        Distributed(num_machines=2)


def test_accelerate_takes_the_total_process_count_and_the_strategy_flag() -> None:
    cmd = launch_command(Distributed(num_processes=4, launcher="accelerate", strategy="fsdp"), M, python="py")
    assert cmd[3] == "accelerate" and cmd[cmd.index("--num_processes") + 1] == "4" and "--use_fsdp" in cmd
    with pytest.raises(ValueError, match="set the TRL fields"):
        Distributed(num_processes=2, strategy="fsdp")  # torchrun: FSDP through SFTConfig.fsdp


def test_a_step_keeps_its_examples_whatever_the_world_size() -> None:
    assert per_process_batch(8, 2) * 2 == 8
    with pytest.raises(ValueError, match="not divisible"):
        per_process_batch(8, 3)
