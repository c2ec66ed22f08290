"""The training process launched by `fine_tuned_model` through Dagster Pipes.

Run as ``python -m mrdabak_pipeline.external.train_entry`` by ``PipesSubprocessClient`` locally,
or as the container command of a ``PipesK8sClient`` pod on a GPU node (same script, same extras).
A crash or an out-of-memory kill here fails the Dagster step, not the Dagster process.

Extras (JSON): ``settings`` (`TrainRecipe.settings`: project knobs and TRL field values, flat),
``dataset_path``, ``output_dir``, ``models_dir``.
Streams each training log line as a Dagster log message, reports the final metrics with
``report_asset_materialization`` and the full result (the asset value) as a custom message.
On failure it writes ``error.json`` beside the checkpoints so the asset can fail with this
process's own error message, then re-raises (Pipes also reports the traceback).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.sft import train_sft

ERROR_FILE = "error.json"
RESULT_FILE = "result.json"


def scalar_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics Pipes can carry as plain metadata values (numbers, text, bools), Nones dropped."""
    out: dict[str, Any] = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float, str, bool))}
    out |= {"base_model": result["base_model"], "base_model_path": result["base_model_path"],
            "model_path": result["model_path"], "is_adapter": result["is_adapter"]}
    return out


def run(pipes: PipesContext) -> dict[str, Any]:
    extras = pipes.extras
    output_dir = Path(extras["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        recipe = TrainRecipe.from_settings(dict(extras.get("settings") or {}))
        result = train_sft(recipe, extras["dataset_path"], output_dir, extras["models_dir"], log=pipes.log.info)
    except BaseException as exc:
        (output_dir / ERROR_FILE).write_text(json.dumps({
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=20),
        }))
        raise
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=1, default=str))
    pipes.report_custom_message(result)
    pipes.report_asset_materialization(metadata=scalar_metrics(result))
    return result


def watch_parent(interval_s: float = 2.0) -> threading.Thread:
    """End this process when the process that launched it dies.

    The Dagster run worker that launched training can be killed outright (kill -9, OOM); the
    instance then frees its `gpu` slot and a retry may start, so a training process left running
    would hold the accelerator and write into the same output folder as the retry. An orphan is
    re-parented (its parent pid changes), which a polling thread notices; SIGTERM lets the
    trainer stop like any terminated run. A thread rather than ``PR_SET_PDEATHSIG``: that signal
    fires when the launching *thread* exits, which in a threaded run worker is not the run's end.
    """
    parent = os.getppid()

    def poll() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=poll, name="watch-parent", daemon=True)
    thread.start()
    return thread


def main() -> None:
    watch_parent()
    with open_dagster_pipes() as pipes:
        run(pipes)


if __name__ == "__main__":
    main()
