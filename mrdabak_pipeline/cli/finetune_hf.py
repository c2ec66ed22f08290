"""`mrdabak finetune-hf`: the guide's local fine-tuning command, outside Dagster.

Same core as the ``fine_tuned_model`` asset (`core.training.sft.train_sft`), run in this process:
``mrdabak finetune-hf --model tiny --epochs 3 --batch-size 4 --learning-rate 1e-4 --use-lora``.
Without ``--dataset`` it uses the newest folder written by ``mrdabak dataset --format huggingface``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mrdabak_pipeline.core.training.sft import TrainParams, train_sft

_D = TrainParams()


def _data_dir() -> Path:
    return Path(os.environ.get("MRDABAK_DATA_DIR", "data")).absolute()


def latest_hf_dataset(data_dir: Path) -> Path:
    """The newest ``datasets/huggingface/<hash>/dataset`` folder (what `mrdabak dataset` writes)."""
    found = sorted((data_dir / "datasets" / "huggingface").glob("*/dataset"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no Hugging Face dataset under {data_dir}/datasets/huggingface: "
                         "run `mrdabak dataset --format huggingface` first or pass --dataset")
    return found[-1]


def params_from_args(args: argparse.Namespace) -> TrainParams:
    return TrainParams(
        base_model=args.model,
        use_lora=args.use_lora,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        grad_accum=args.grad_accum,
        num_threads=args.threads,
        throughput=args.throughput,
        merge=args.merge,
        resume=not args.no_resume,
        max_steps=args.max_steps,
    )


def _run(args: argparse.Namespace) -> int:
    data_dir = _data_dir()
    dataset = Path(args.dataset) if args.dataset else latest_hf_dataset(data_dir)
    params = params_from_args(args)
    out = Path(args.output) if args.output else data_dir / "models" / "finetune-hf" / Path(args.model).name
    result = train_sft(params, dataset, out, data_dir / "models", log=print)
    summary = {k: result[k] for k in ("base_model", "base_model_path", "model_path", "is_adapter", "merged_path",
                                      "loss_curve_path")}
    print(json.dumps(summary | {"metrics": result["metrics"]}, indent=2, ensure_ascii=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune-hf`` (sets ``func(args) -> int``)."""
    p = subparsers.add_parser("finetune-hf", help="fine-tune a local/HF causal LM with TRL SFT (+ LoRA)")
    p.add_argument("--model", default=_D.base_model,
                   help="'tiny' (built from the data), 'smollm2-135m' (offline), a folder or a HF model id")
    p.add_argument("--dataset", default=None, help="DatasetDict folder (default: newest from `mrdabak dataset`)")
    p.add_argument("--output", default=None, help="output folder (default: data/models/finetune-hf/<model>)")
    p.add_argument("--epochs", type=float, default=_D.epochs)
    p.add_argument("--batch-size", type=int, default=_D.batch_size)
    p.add_argument("--learning-rate", type=float, default=_D.learning_rate,
                   help="2e-3 suits tiny; use ~1e-4 for LoRA on a pretrained model")
    lora = p.add_mutually_exclusive_group()
    lora.add_argument("--use-lora", dest="use_lora", action="store_true", default=_D.use_lora,
                      help="train a LoRA adapter (default: full fine-tune, best for tiny)")
    lora.add_argument("--full", dest="use_lora", action="store_false", help="full fine-tune (the default)")
    p.add_argument("--lora-r", type=int, default=_D.lora_r)
    p.add_argument("--lora-alpha", type=int, default=_D.lora_alpha)
    p.add_argument("--max-length", type=int, default=_D.max_length)
    p.add_argument("--grad-accum", type=int, default=_D.grad_accum)
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--threads", type=int, default=_D.num_threads, help="torch CPU threads")
    p.add_argument("--throughput", choices=("plain", "packed", "grouped"), default=_D.throughput)
    p.add_argument("--max-steps", type=int, default=_D.max_steps)
    p.add_argument("--merge", action="store_true", help="also save a merged full model")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in the output folder")
    p.set_defaults(func=_run)
