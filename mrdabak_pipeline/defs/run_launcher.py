"""The instance's run launcher: Dagster's `DefaultRunLauncher` plus a run-worker health check.

Why it exists: with the default launcher, run monitoring cannot see that a run worker died
(``kill -9``, the OOM killer, a reboot): `DefaultRunLauncher` does not support health checks, so
the dead run stays STARTED forever. It keeps its ``mrdabak/pool=gpu`` run slot and the ``gpu``
pool slot its ``fine_tuned_model`` step claimed, and every later training run waits ("Step blocked
by limit for pool gpu"). Marking the run failed by hand does not free the pool slot either.

What it does: the run worker writes its pid in its first engine event ("Started process for run
(pid: N)"). The monitoring daemon (``run_monitoring`` in ``dagster.yaml``) asks this launcher every
``poll_interval_seconds`` whether that process is still alive; when it is gone, a zombie, or the
pid now belongs to a younger process, the daemon marks the run FAILED, and
``free_slots_after_run_end_seconds`` then frees the slots it held. Runs on another host (a remote
gRPC code server) cannot be checked from here and are reported RUNNING: ``dagster/max_runtime``
still bounds them.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import dagster as dg
import psutil

from mrdabak_pipeline.defs.compat import GRPC_INFO_TAG, CheckRunHealthResult, WorkerStatus

#: The message prefix of the run worker's own engine event (dagster/_cli/api.py, _grpc/impl.py).
STARTED_PROCESS_PREFIX = "Started process for run"
#: Hostnames under which a code server runs on this machine.
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname()}
#: The worker reports its pid after it started: allow for clock granularity.
_PID_REUSE_SLACK_S = 2.0


@dataclass(frozen=True)
class WorkerProcess:
    """The run worker as it reported itself: its pid and when it said so (epoch seconds)."""

    pid: int
    reported_at: float


def worker_process(instance: dg.DagsterInstance, run_id: str) -> WorkerProcess | None:
    """The newest "Started process for run (pid: N)" event of `run_id`, if the worker sent one."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=100, ascending=False
    ).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(STARTED_PROCESS_PREFIX):
            continue
        pid = event.engine_event_data.metadata.get("pid") if event.engine_event_data else None
        if pid is not None:
            return WorkerProcess(int(pid.value), entry.timestamp)
    return None


def process_health(worker: WorkerProcess) -> CheckRunHealthResult:
    """RUNNING while the reported process exists and is the same one (not a reused pid)."""
    try:
        process = psutil.Process(worker.pid)
        alive = process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped by the code server
        started = process.create_time()
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {worker.pid} is gone (killed or crashed)")
    if not alive:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {worker.pid} exited (zombie)")
    if started > worker.reported_at + _PID_REUSE_SLACK_S:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {worker.pid} is gone (pid reused)")
    return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {worker.pid} is alive")


def _runs_on_this_host(run: dg.DagsterRun) -> bool:
    """The default launcher records the code server it used; only a local one can be checked."""
    try:
        info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    except ValueError:
        return False
    return bool(info.get("socket")) or info.get("host") in _LOCAL_HOSTS


class LocalHealthCheckRunLauncher(dg.DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers the monitoring daemon can health-check.

    Configured in ``dagster.yaml``::

        run_launcher:
          module: mrdabak_pipeline.defs.run_launcher
          class: LocalHealthCheckRunLauncher
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not _runs_on_this_host(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker on another host: not checked")
        worker = worker_process(self._instance, run.run_id)
        if worker is None:  # the worker reports its pid before RUN_START: nothing to judge yet
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not reported its pid yet")
        return process_health(worker)
