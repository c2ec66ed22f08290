"""The Pipes training script stops when the run worker that launched it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil

CHILD = textwrap.dedent(
    """
    import time
    from mrdabak_pipeline.external.train_entry import watch_parent
    watch_parent(0.1)
    print("watching", flush=True)
    time.sleep(60)
    """
)
PARENT = textwrap.dedent(
    f"""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {CHILD!r}])
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def test_training_process_exits_when_its_launcher_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    # The child shares the parent's stdout: wait until its watcher is running (its imports can take
    # seconds on a busy machine; a parent killed before that would leave nothing to notice).
    assert parent.stdout.readline().strip() == "watching"
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE  # alive while its parent is
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        child.wait(timeout=10)
    except psutil.TimeoutExpired:
        child.kill()
        raise AssertionError("the orphaned training process kept running after its launcher was killed") from None
