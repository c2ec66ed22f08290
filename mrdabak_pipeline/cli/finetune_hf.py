"""`mrdabak finetune-hf`: the guide's local fine-tuning command, outside Dagster.

Same core as the ``fine_tuned_model`` asset (`core.training.sft.train_sft`), run in this process,
and the same settings (`core.training.config.TrainRecipe.from_config`):

- ``--config FILE.yaml``: the asset's run config, either a Dagster run config file
  (``scripts/demo_train.yaml``: ``ops.fine_tuned_model.config`` is read) or that config's body;
- flags for the common knobs (``--model tiny --epochs 3 --batch-size 4 --learning-rate 1e-4
  --use-lora``), which win over the file;
- ``--set FIELD=VALUE`` (repeatable) for any `trl.SFTConfig` / `trl.ModelConfig` field or project
  knob, e.g. ``--set lora_r=8 --set lr_scheduler_type=constant``; VALUE is JSON or YAML.

Without ``--dataset`` it uses the newest folder written by ``mrdabak dataset --format huggingface``;
without ``--output`` it trains into ``data/models/finetune-hf/<model>-<run key>``, so a rerun with
the same data and settings resumes there.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from mrdabak_pipeline.core.training.config import COMMON_KNOBS, THROUGHPUTS, TrainRecipe, run_key
from mrdabak_pipeline.core.training.sft import train_sft

#: The asset whose run config ``--config`` reads inside a Dagster run config file.
ASSET = "fine_tuned_model"


def _data_dir() -> Path:
    return Path(os.environ.get("MRDABAK_DATA_DIR", "data")).absolute()


def latest_hf_dataset(data_dir: Path) -> Path:
    """The newest ``datasets/huggingface/<hash>/dataset`` folder (what `mrdabak dataset` writes)."""
    found = sorted((data_dir / "datasets" / "huggingface").glob("*/dataset"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no Hugging Face dataset under {data_dir}/datasets/huggingface: "
                         "run `mrdabak dataset --format huggingface` first or pass --dataset")
    return found[-1]


def parse_value(text: str) -> Any:
    """A flag value as JSON (``1e-4``, ``true``, ``["q_proj"]``), else YAML (``[q_proj, v_proj]``), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text) if text.strip() else text


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``fine_tuned_model`` run config in a YAML file: a whole Dagster run config or its body."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if "ops" in doc:
        doc = (doc["ops"].get(ASSET) or {}).get("config") or {}
    backend = doc.pop("backend", "local")
    if backend != "local":
        raise SystemExit(f"{path}: backend {backend!r} is a cloud job (the Dagster asset runs it); "
                         "finetune-hf trains locally")
    doc.pop("cloud", None)
    return doc


def recipe_from_args(args: argparse.Namespace) -> TrainRecipe:
    """File < flags < ``--set``: a later source replaces a setting under either of its names."""
    config = read_config(args.config) if args.config else {}
    overrides = dict(config.pop("overrides", None) or {})
    flags = {k: getattr(args, k) for k in ("base_model", "throughput", "num_threads", "merge", "resume",
                                          "max_train_minutes", *COMMON_KNOBS)}
    for key, value in flags.items():
        if value is not None:
            overrides.pop(COMMON_KNOBS.get(key, key), None)
            config[key] = value
    short = {name: key for key, name in COMMON_KNOBS.items()}
    for item in args.set or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        name = name.strip()
        config.pop(short.get(name, name), None)
        overrides[name] = parse_value(text)
    try:
        return TrainRecipe.from_config(config | {"overrides": overrides})
    except ValueError as exc:
        raise SystemExit(f"finetune-hf: {exc}") from exc


def _run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    data_dir = _data_dir()
    dataset = Path(args.dataset) if args.dataset else latest_hf_dataset(data_dir)
    out = (Path(args.output) if args.output else data_dir / "models" / "finetune-hf"
           / f"{Path(recipe.base_model).name}-{run_key({'path': str(dataset.absolute())}, recipe)}")
    result = train_sft(recipe, dataset, out, data_dir / "models", log=print)
    summary = {k: result[k] for k in ("base_model", "base_model_path", "model_path", "is_adapter", "merged_path",
                                      "loss_curve_path")}
    print(json.dumps(summary | {"metrics": result["metrics"]}, indent=2, ensure_ascii=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune-hf`` (sets ``func(args) -> int``). Unset flags keep the file's or the recipe's value."""
    p = subparsers.add_parser("finetune-hf", help="fine-tune a local/HF causal LM with TRL SFT (+ LoRA)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML run config (a Dagster run config file or its body)")
    p.add_argument("--model", dest="base_model", default=None,
                   help="'tiny' (default, built from the data), 'gemma3', 'gemma3-ko', 'smollm2-135m', a folder or a HF model id")
    p.add_argument("--dataset", default=None, help="DatasetDict folder (default: newest from `mrdabak dataset`)")
    p.add_argument("--output", default=None, help="output folder (default: data/models/finetune-hf/<model>-<key>)")
    for key, name in COMMON_KNOBS.items():
        if key != "use_lora":
            p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=parse_value, default=None,
                           help=f"trl {name}")
    lora = p.add_mutually_exclusive_group()
    lora.add_argument("--use-lora", dest="use_lora", action="store_const", const=True, default=None,
                      help="train a LoRA adapter (trl use_peft; default: full fine-tune, best for tiny)")
    lora.add_argument("--full", dest="use_lora", action="store_const", const=False, help="full fine-tune")
    p.add_argument("--throughput", choices=THROUGHPUTS, default=None, help="batch layout (default grouped)")
    p.add_argument("--threads", dest="num_threads", type=int, default=None, help="torch CPU threads (default 1)")
    p.add_argument("--max-train-minutes", dest="max_train_minutes", type=float, default=None,
                   help="train for this many minutes, the learning rate following the clock")
    p.add_argument("--merge", action="store_const", const=True, default=None, help="also save a merged full model")
    p.add_argument("--no-resume", dest="resume", action="store_const", const=False, default=None,
                   help="ignore checkpoints in the output folder")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any trl.SFTConfig / trl.ModelConfig field or project knob (repeatable)")
    p.set_defaults(func=_run)
