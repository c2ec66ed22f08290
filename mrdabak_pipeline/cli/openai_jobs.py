"""``mrdabak openai-jobs list|check|cancel`` and ``mrdabak finetune-openai``: the guide's script, safely.

Same client as the Dagster asset (`mrdabak_pipeline.core.cloud`), so the CLI also never pays
twice: running ``finetune-openai`` again with the same file and settings attaches to the job it
created before. Credentials come only from the environment (OPENAI_API_KEY / OPENAI_BASE_URL, or
AZURE_OPENAI_ENDPOINT / AZURE_OPENAI_API_KEY / OPENAI_API_VERSION with ``--azure``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import openai

from mrdabak_pipeline.core.cloud import (
    DEFAULT_BASE_MODEL,
    CloudCredentialsError,
    CloudSpecError,
    FineTuningClient,
    JobFailedError,
    app_settings,
    describe_job,
    job_spec_from,
)
from mrdabak_pipeline.defs.training.cloud import OpenAIFineTuningResource


def _client(args: argparse.Namespace) -> FineTuningClient:
    backend = "azure" if args.azure else "openai"
    version = os.environ.get("OPENAI_API_VERSION")
    resource = OpenAIFineTuningResource(**({"api_version": version} if version else {}))
    return resource.get_client(backend)


def _ts(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if epoch else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    jobs = _client(args).list_jobs(limit=args.limit)
    if not jobs:
        print("no fine-tuning jobs")
    for job in jobs:
        print(f"{job.id}  {job.status:<16} {job.model}  {_ts(job.created_at)}  {job.fine_tuned_model or ''}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.retrieve(args.job_id)
    print(json.dumps(describe_job(job), ensure_ascii=False, indent=2))
    for event in client.recent_events(args.job_id, limit=args.events):
        print(f"{_ts(event.created_at)}  {event.level:<5} {event.message}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    print(f"{job.id}: {job.status}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    backend = "azure" if args.azure else "openai"
    spec = job_spec_from(backend, vars(args))  # the flags named like build_job_spec's options
    client = _client(args)
    handle = client.create_or_attach(
        spec, train_path=args.file, validation_path=args.validation_file, run_id="cli"
    )
    for up in handle.uploads:
        print(f"{'reused' if up.reused else 'uploaded'} {up.filename} -> {up.file_id}")
    print(f"{'attached to existing job' if handle.attached else 'created job'} {handle.job.id} ({handle.job.status})")
    if args.no_wait:
        return 0
    job = client.follow(
        handle.job.id,
        on_event=lambda e: print(f"{_ts(e.created_at)}  {e.message}", flush=True),
        poll_interval_s=args.poll_interval,
    )
    result = client.outcome(job)
    print(f"fine-tuned model: {result['model_id']}  (trained tokens: {result['trained_tokens']})")
    if backend == "openai":
        settings = app_settings(backend="openai", model=result["model_id"], base_url=os.environ.get("OPENAI_BASE_URL"))
        print("production app settings:\n" + settings["properties_text"])
    else:
        print("Azure: deploy the model (Dagster's fine_tuned_model asset does it, or see the README), then set")
        print("voice.llm.model to the deployment name.")
    return 0


def _guarded(func: Any) -> Any:
    """Expected failures become one clear line on stderr and exit code 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (CloudCredentialsError, CloudSpecError, JobFailedError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        except openai.APIStatusError as exc:
            print(f"error: API answered {exc.status_code}: {exc.message}", file=sys.stderr)
        except openai.APIConnectionError as exc:
            print(f"error: cannot reach the API: {exc}", file=sys.stderr)
        return 1

    return run


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--azure", action="store_true", help="use Azure OpenAI (AZURE_OPENAI_* env vars)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``openai-jobs`` and ``finetune-openai``; each sets ``func(args) -> int``."""
    jobs = subparsers.add_parser("openai-jobs", help="list, check or cancel OpenAI/Azure fine-tuning jobs")
    actions = jobs.add_subparsers(dest="openai_jobs_action", required=True)
    p_list = actions.add_parser("list", help="recent fine-tuning jobs")
    p_list.add_argument("--limit", type=int, default=20)
    _add_backend(p_list)
    p_list.set_defaults(func=_guarded(_cmd_list))
    p_check = actions.add_parser("check", help="status and latest events of one job")
    p_check.add_argument("job_id")
    p_check.add_argument("--events", type=int, default=20, help="how many recent events to show")
    _add_backend(p_check)
    p_check.set_defaults(func=_guarded(_cmd_check))
    p_cancel = actions.add_parser("cancel", help="cancel a running job")
    p_cancel.add_argument("job_id")
    _add_backend(p_cancel)
    p_cancel.set_defaults(func=_guarded(_cmd_cancel))

    ft = subparsers.add_parser("finetune-openai", help="upload a JSONL file and fine-tune (attaches if already done)")
    ft.add_argument("--file", required=True, help="training JSONL (chat format)")
    ft.add_argument("--validation-file", default=None)
    ft.add_argument("--model", default=DEFAULT_BASE_MODEL)
    ft.add_argument("--suffix", default=None, help="default mrdabak-voice-order (Azure: mrdabak-voice)")
    ft.add_argument("--method", choices=["supervised", "dpo"], default="supervised")
    ft.add_argument("--n-epochs", default="auto")
    ft.add_argument("--batch-size", default="auto")
    ft.add_argument("--learning-rate-multiplier", default="auto")
    ft.add_argument("--beta", default=None, help="DPO only")
    ft.add_argument("--seed", type=int, default=None)
    ft.add_argument("--wandb-project", default=None)
    ft.add_argument("--poll-interval", type=float, default=15.0)
    ft.add_argument("--no-wait", action="store_true", help="return after creating/attaching the job")
    _add_backend(ft)
    ft.set_defaults(func=_guarded(_cmd_finetune))
