"""A killed training run must not hold the `gpu` pool forever (issue 15, item 3).

For real: the project's ``dagster.yaml`` (only the monitoring poll shortened, so the test takes
seconds instead of minutes), a ``dagster-daemon`` with its code server, a run of a
``fine_tuned_model`` stand-in in pool ``gpu`` launched through the run queue, ``kill -9`` of its run
worker mid-step, and a second training run that must get the slot within the time the config
promises. Before the fix the second run waited forever: the dead run stayed STARTED (the default
launcher cannot health-check its worker) and its pool slot was never freed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.launcher.base import WorkerStatus

from mrdabak_pipeline.defs.run_launcher import LocalHealthCheckRunLauncher, WorkerProcess, process_health
from mrdabak_pipeline_tests.defs.training import gpu_pool_location

REPO_ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
#: The poll used here instead of the project's 30 s; every other setting is the project's own.
TEST_POLL_SECONDS = 3


def _wait(what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = TEST_POLL_SECONDS
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "workspace.yaml").write_text(
        yaml.safe_dump(
            {"load_from": [{"python_file": {"relative_path": gpu_pool_location.__file__,
                                            "working_directory": str(REPO_ROOT), "location_name": "gpu_test"}}]}
        )
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def daemon(home: Path) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run`` in its own process group (it starts the code server, which starts
    the run workers); the whole group is ended afterwards."""
    log = (home / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(home.parent / "workspace.yaml")],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def _launch(home: Path, seconds: float) -> str:
    run_id = str(uuid.uuid4())
    subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", str(home.parent / "workspace.yaml"), "-j", "training_job",
         "--run-id", run_id, "--config-json", json.dumps({"ops": {"fine_tuned_model": {"config": {"seconds": seconds}}}})],
        cwd=REPO_ROOT, check=True, capture_output=True, timeout=120,
    )
    return run_id


def _slot_holders(instance: DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(gpu_pool_location.POOL).claimed_slots}


def test_the_stand_in_uses_the_real_pool_and_tag() -> None:
    from mrdabak_pipeline.definitions import defs
    from mrdabak_pipeline.defs.automation import automation

    assert defs.resolve_assets_def("fine_tuned_model").op.pool == gpu_pool_location.POOL
    job = gpu_pool_location.defs.resolve_job_def("training_job")
    assert job.run_tags[automation.GPU_POOL_TAG] == automation.train_evaluate_promote_job.tags[automation.GPU_POOL_TAG]


def test_the_instance_uses_the_health_checking_launcher(home: Path) -> None:
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, LocalHealthCheckRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_process_health_sees_dead_zombie_and_reused_pids() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(child.pid).create_time()
        assert process_health(WorkerProcess(child.pid, started + 0.5)).status is WorkerStatus.RUNNING
        # the pid now belongs to a process younger than the worker's report: not the worker
        assert process_health(WorkerProcess(child.pid, started - 60)).status is WorkerStatus.FAILED
        child.kill()
        _wait("the child to be a zombie", lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, 0.1)
        zombie = process_health(WorkerProcess(child.pid, started + 0.5))
        assert zombie.status is WorkerStatus.FAILED and "zombie" in zombie.msg
    finally:
        child.kill()
        child.wait()
    gone = process_health(WorkerProcess(child.pid, started + 0.5))
    assert gone.status is WorkerStatus.FAILED and "gone" in gone.msg


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_killed_training_run_frees_the_gpu_pool(home: Path, daemon: subprocess.Popen) -> None:
    monitoring = yaml.safe_load((home / "dagster.yaml").read_text())["run_monitoring"]
    dequeue = yaml.safe_load((home / "dagster.yaml").read_text())["run_queue"]["dequeue_interval_seconds"]
    # detection (one poll) + freeing (one more poll after free_slots_after_run_end_seconds) +
    # the queue picking the waiting run + a run worker start on a busy box
    promised = 2 * monitoring["poll_interval_seconds"] + monitoring["free_slots_after_run_end_seconds"] + dequeue
    slack = 30

    with DagsterInstance.get() as instance:
        first = _launch(home, seconds=600)
        pid_file = gpu_pool_location.pid_dir() / f"{first}.pid"
        _wait("the first run to hold the gpu slot", lambda: pid_file.exists() and first in _slot_holders(instance), 120)
        second = _launch(home, seconds=0)
        time.sleep(2 * monitoring["poll_interval_seconds"])  # a live worker is left alone
        assert instance.get_run_by_id(first).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(second).status == DagsterRunStatus.QUEUED

        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        _wait(
            "the second run to get the slot and finish",
            lambda: instance.get_run_by_id(second).status == DagsterRunStatus.SUCCESS,
            promised + slack,
        )
        took = time.monotonic() - killed_at

        dead = instance.get_run_by_id(first)
        assert dead.status == DagsterRunStatus.FAILURE
        assert (gpu_pool_location.pid_dir() / f"{second}.pid").exists()
        assert first not in _slot_holders(instance)
        print(f"kill -9 -> second training run done in {took:.1f} s (promised {promised} s + {slack} s slack)")
