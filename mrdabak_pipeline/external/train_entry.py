"""The training process launched by `fine_tuned_model` through Dagster Pipes.

Run as ``python -m mrdabak_pipeline.external.train_entry`` by ``PipesSubprocessClient`` locally,
or as the container command of a ``PipesK8sClient`` pod on a GPU node (same script, same extras).
A crash or an out-of-memory kill here fails the Dagster step, not the Dagster process.

Extras (JSON): ``settings`` (`TrainRecipe.settings`: project knobs and TRL field values, flat),
``dataset_path`` (SFT: the huggingface_dataset folder), ``pairs_train_path`` / ``pairs_validation_path``
(``method: dpo``: dpo_dataset's TRL pair files, `core.training.dpo`), ``output_dir``, ``models_dir``.
Streams each training log line as a Dagster log message, reports the final metrics with
``report_asset_materialization`` and the full result (the asset value) as a custom message.
On failure it writes ``error.json`` beside the checkpoints so the asset can fail with this
process's own error message, then re-raises (Pipes also reports the traceback).

Under ``torchrun`` / ``accelerate launch`` (``distributed`` in the run config, see
`core.training.distributed`) every rank runs this script: only rank 0 opens Dagster Pipes (one
stream of log lines, one result); the other ranks read the same extras from the Pipes context and
report nothing (`SilentPipes`). Each process trains ``batch_size / world_size`` examples per step,
so an optimizer step holds the same examples as a one-process run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster_pipes import (
    PipesContext,
    PipesDefaultContextLoader,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)

from mrdabak_pipeline.core.training import distributed
from mrdabak_pipeline.core.training.config import COMMON_KNOBS, TrainRecipe
from mrdabak_pipeline.core.training.dpo import train_dpo
from mrdabak_pipeline.core.training.sft import train_sft

ERROR_FILE = "error.json"
RESULT_FILE = "result.json"


def scalar_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics Pipes can carry as plain metadata values (numbers, text, bools), Nones dropped."""
    out: dict[str, Any] = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float, str, bool))}
    out |= {"base_model": result["base_model"], "base_model_path": result["base_model_path"],
            "model_path": result["model_path"], "is_adapter": result["is_adapter"],
            "method": result.get("method", "sft")}
    return out


class _Quiet:
    """A logger that drops lines (ranks other than 0 say nothing to Dagster)."""

    def info(self, message: str) -> None:
        pass


class SilentPipes:
    """What a rank other than 0 sees instead of a `PipesContext`: the same extras, no reporting
    (a second rank writing Pipes messages would interleave its log lines and report twice)."""

    def __init__(self, extras: dict[str, Any]) -> None:
        self.extras = extras
        self.log = _Quiet()

    def report_custom_message(self, payload: Any) -> None:
        pass

    def report_asset_materialization(self, **kwargs: Any) -> None:
        pass


@contextmanager
def open_pipes_for_rank() -> Iterator[PipesContext | SilentPipes]:
    """`open_dagster_pipes` on rank 0; on other ranks the extras read from the Pipes context
    (a temp file locally, an environment variable in a Kubernetes pod) and nothing else."""
    if distributed.is_main():
        with open_dagster_pipes() as pipes:
            yield pipes
        return
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        extras = dict(data.get("extras") or {})
    yield SilentPipes(extras)


def process_recipe(settings: dict[str, Any], processes: int) -> TrainRecipe:
    """The recipe one of ``processes`` data-parallel processes trains: the same examples per
    optimizer step in total (`distributed.per_process_batch`), everything else unchanged."""
    recipe = TrainRecipe.from_settings(settings)
    if processes == 1:
        return recipe
    name = COMMON_KNOBS["batch_size"]
    return recipe.with_settings(**{name: distributed.per_process_batch(int(recipe.value(name)), processes)})


def _write_error(output_dir: Path, exc: BaseException) -> None:
    """Rank 0's error always; another rank's only when rank 0 wrote none (rank 0 is usually the
    one that failed first, the others are then stopped by the launcher)."""
    body = json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20)})
    try:
        with open(output_dir / ERROR_FILE, "w" if distributed.is_main() else "x") as f:
            f.write(body)
    except FileExistsError:
        pass


def run(pipes: PipesContext | SilentPipes) -> dict[str, Any]:
    extras = pipes.extras
    output_dir = Path(extras["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        (output_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        processes = distributed.world_size()
        recipe = process_recipe(dict(extras.get("settings") or {}), processes)
        if processes > 1:
            pipes.log.info(f"{processes} data-parallel processes, "
                           f"{recipe.value(COMMON_KNOBS['batch_size'])} examples each per optimizer step")
        if recipe.method == "dpo":
            result = train_dpo(recipe, extras["pairs_train_path"], output_dir, extras["models_dir"],
                               validation_path=extras.get("pairs_validation_path"), log=pipes.log.info)
        else:
            result = train_sft(recipe, extras["dataset_path"], output_dir, extras["models_dir"], log=pipes.log.info)
    except BaseException as exc:
        _write_error(output_dir, exc)
        raise
    if not distributed.is_main():
        return result
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
    if distributed.world_size() > 1:
        from mrdabak_pipeline.core.training.sft import device_info

        distributed.init_process_group(cuda=device_info()["device"] == "cuda")
    with open_pipes_for_rank() as pipes:
        run(pipes)


if __name__ == "__main__":
    main()
