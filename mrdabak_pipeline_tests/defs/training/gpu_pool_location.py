"""A code location for the kill -9 test: a `fine_tuned_model` stand-in in the real `gpu` pool.

It holds the pool slot while it "trains" (sleeps), and writes its pid where the test finds it, so
the test can kill the run worker mid-step. It imports nothing heavy: the daemon's code server
starts in a second. The run worker executes steps in its own process (in-process executor, as
the real code location), so the pid written here is the run worker's.
"""


import os
import time
from pathlib import Path

import dagster as dg

#: The pool of the real `fine_tuned_model` (the test asserts they agree).
POOL = "gpu"


def pid_dir() -> Path:
    return Path(os.environ["MRDABAK_DATA_DIR"]) / "gpu_pool_test"


class TrainConfig(dg.Config):
    seconds: float = 0.0


@dg.asset(name="fine_tuned_model", pool=POOL)
def fine_tuned_model(context: dg.AssetExecutionContext, config: TrainConfig) -> None:
    folder = pid_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{context.run_id}.pid").write_text(str(os.getpid()))
    time.sleep(config.seconds)


training_job = dg.define_asset_job(
    "training_job", selection=[fine_tuned_model], tags={"mrdabak/pool": "gpu"}, executor_def=dg.in_process_executor
)
defs = dg.Definitions(assets=[fine_tuned_model], jobs=[training_job])
