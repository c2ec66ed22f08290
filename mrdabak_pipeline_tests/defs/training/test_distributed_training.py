"""`fine_tuned_model` with ``distributed.num_processes: 2``: torchrun starts two gloo ranks on CPU.

Through the real Definitions (the asset and the Pipes client the code location registers), on
the tiny model. Only rank 0 speaks to Dagster (one stream of step lines), the optimizer steps hold
the same examples as a one-process run (same loss within a tolerance), and a launcher killed with
SIGKILL mid-training leaves a checkpoint the retry resumes from.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest

from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.distributed import LAUNCHER_MODULE
from mrdabak_pipeline.core.training.sft import train_sft
from mrdabak_pipeline.definitions import build_definitions
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline_tests.training_data import DATASET_MARK, dataset_stand_ins, save_dataset

MARK = DATASET_MARK
#: 24 dialogs, batch 8 -> 3 optimizer steps per epoch; full fine-tune of the tiny base (fast steps).
SETTINGS = {"epochs": 2, "batch_size": 8, "num_threads": 1,
            "overrides": {"logging_steps": 1, "eval_strategy": "no", "save_steps": 3}}
TWO = {"distributed": {"num_processes": 2}}
#: Gradient sums in another order (two ranks, all-reduce) over fp32: not bit-equal, but close.
LOSS_TOLERANCE = 0.02

def _materialize(tmp_path: Path, hf_path: Path, config: dict[str, Any], instance: dg.DagsterInstance):
    """The code location's own `fine_tuned_model` and resources, upstream replaced by stand-ins."""
    defs = build_definitions()
    resources = dict(defs.resources or {}) | {
        "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "storage")),
        "data_paths": DataPathsResource(root=str(tmp_path / "data")),
    }
    return dg.materialize(
        [*dataset_stand_ins(hf_path), defs.get_assets_def("fine_tuned_model")],
        resources=resources,
        run_config={"ops": {"fine_tuned_model": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )


def _step_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if re.match(r"step \d+/", e.user_message or "")]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_two_processes_train_like_one_and_only_rank_0_reports(tmp_path: Path) -> None:
    hf_path = save_dataset(tmp_path / "hf", n_train=24, n_val=6)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(tmp_path, hf_path, SETTINGS | TWO, instance)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["metrics"]["global_step"] == 6  # 8 examples per step in total, not 8 per process

    steps = _step_lines(instance, result.run_id)
    assert [int(re.match(r"step (\d+)/", m).group(1)) for m in steps] == [1, 2, 3, 4, 5, 6]  # one stream
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("2 data-parallel processes, 4 examples each" in m for m in logs)
    assert sum(1 for m in logs if m.startswith("done:")) == 1
    assert len(result.asset_materializations_for_node("fine_tuned_model")) == 1
    assert (Path(value["model_path"]) / "model.safetensors").exists()

    single = train_sft(TrainRecipe.from_config(SETTINGS), hf_path, tmp_path / "single", tmp_path / "data" / "models",
                       log=lambda _: None)
    assert single["metrics"]["global_step"] == 6
    got, want = value["metrics"]["train_loss"], single["metrics"]["train_loss"]
    assert abs(got - want) <= LOSS_TOLERANCE * want, (got, want)


def _launcher() -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        try:
            if LAUNCHER_MODULE in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_killed_launcher_leaves_a_checkpoint_the_retry_resumes_from(tmp_path: Path) -> None:
    hf_path = save_dataset(tmp_path / "hf", n_train=24, n_val=6)
    instance = dg.DagsterInstance.ephemeral()
    slow = SETTINGS | TWO | {"epochs": 4}  # 12 steps, a checkpoint every 3
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(result=_materialize(tmp_path, hf_path, slow, instance)))
    thread.start()
    ckpts = tmp_path / "data" / "models" / "fine_tuned"
    deadline = time.monotonic() + 180
    while not list(ckpts.glob("*/checkpoints/checkpoint-3/trainer_state.json")):
        assert time.monotonic() < deadline and thread.is_alive(), "no checkpoint before the run ended"
        time.sleep(0.2)
    launcher = _launcher()
    assert launcher is not None
    workers = launcher.children(recursive=True)
    assert len(workers) == 2
    os.kill(launcher.pid, signal.SIGKILL)
    thread.join(60)
    assert not first["result"].success
    _, alive = psutil.wait_procs(workers, timeout=15)  # the orphaned ranks notice and stop
    assert not alive, "training ranks outlived their killed launcher"
    assert not list(ckpts.glob("*/model"))  # killed before the end: no final model

    again = _materialize(tmp_path, hf_path, slow, instance)
    assert again.success
    metrics = again.output_for_node("fine_tuned_model")["metrics"]
    assert metrics["resumed_from"] is not None and metrics["resumed_from"].startswith("checkpoint-")
    assert int(metrics["resumed_from"].split("-")[1]) >= 3 and metrics["global_step"] == 12
