"""`mrdabak predict`: a model's replies to a file of conversations, as the app would parse them.

``mrdabak predict --model promoted --input in.jsonl --output out.jsonl [--constrained]``

``--model`` is ``promoted`` (``$MRDABAK_DATA_DIR/models/promoted.json``), a model folder (adapter or
full), a `fine_tuned_model`/`promoted_model` value saved as .json, or an endpoint model
(``ft:...`` on OpenAI, or any served name with ``--base-url``, e.g. vLLM). The work is
`core.evaluation.predict` with evaluation's own generators; this module only parses arguments.
A run summary (counts, JSON-valid rate, time; no customer text) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mrdabak_pipeline.core import prompts
from mrdabak_pipeline.core.evaluation import predict
from mrdabak_pipeline.core.runtime.files import atomic_write_bytes, jsonl_bytes


def data_dir() -> Path:
    return Path(os.environ.get("MRDABAK_DATA_DIR", "data")).absolute()


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that pick a model and how it generates (shared with ``mrdabak chat``)."""
    p.add_argument("--model", required=True,
                   help="'promoted', a model folder (adapter or full), a model-value .json, or an endpoint "
                        "model id (ft:... or any name with --base-url)")
    p.add_argument("--base-url", default=None,
                   help="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1 for vLLM); "
                        "default OPENAI_BASE_URL / api.openai.com for ft:... ids")
    p.add_argument("--azure", action="store_true", help="the endpoint is Azure OpenAI (--model is the deployment)")
    p.add_argument("--api-key-env", default=None, help="env var holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--base-model", default=None, help="base model folder of an adapter, if it moved")
    p.add_argument("--prompt", choices=[k.value for k in prompts.PromptKind], default=None,
                   help="system prompt kind for a model that records none (default short); a model that "
                        "records its prompt refuses another")
    p.add_argument("--prompt-id", default=None,
                   help="the prompt a bare folder / endpoint model was trained with, e.g. mrdabak-v2-short")
    p.add_argument("--constrained", action="store_true",
                   help="schema-constrained decoding: token masks locally, response_format json_schema on endpoints")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--concurrency", type=int, default=4, help="parallel requests to an endpoint")


def model_from_args(args: argparse.Namespace) -> tuple[predict.ModelSpec, predict.PromptChoice]:
    """Resolve ``--model`` and the prompt; a bad value ends the command with the reason."""
    try:
        spec = predict.resolve_model(args.model, data_dir(), base_url=args.base_url, azure=args.azure,
                                     base_model=args.base_model, prompt_id=args.prompt_id)
        return spec, predict.choose_prompt(spec, args.prompt)
    except (predict.ModelSpecError, ValueError) as exc:  # PromptMismatchError is a ValueError
        raise SystemExit(f"mrdabak: {exc}") from None


def generator_from_args(spec: predict.ModelSpec, args: argparse.Namespace) -> predict.ChatGenerator:
    return predict.build_generator(
        spec, constrained=args.constrained, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        device=args.device, num_threads=args.threads, concurrency=args.concurrency, api_key_env=args.api_key_env,
    )


def _run(args: argparse.Namespace) -> int:
    spec, choice = model_from_args(args)
    objects = predict.read_objects(args.input)
    generator = generator_from_args(spec, args)
    try:
        records, stats = predict.predict_objects(objects, generator, choice)
    finally:
        generator.close()
    atomic_write_bytes(Path(args.output), jsonl_bytes(records))
    summary = {"model": spec.label, "backend": spec.backend, "prompt_id": choice.prompt_id,
               "constrained": args.constrained, "output": str(args.output), **stats.to_dict()}
    print(json.dumps(summary, ensure_ascii=False), file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` (sets ``func(args) -> int``)."""
    p = subparsers.add_parser("predict", help="a model's replies to conversations in a JSONL file")
    add_model_args(p)
    p.add_argument("--input", required=True, help='JSONL: {"id", "now", "messages": [user/assistant turns]}')
    p.add_argument("--output", required=True, help='JSONL: {"id", "reply", "parsed"} per input line')
    p.set_defaults(func=_run)
