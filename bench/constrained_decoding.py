"""Schema-constrained decoding: valid-JSON rate, accuracy and time per reply, with and without.

``python -m bench.constrained_decoding [--train 200 --epochs 4] [--smollm2]``

Models: the random-init tiny base (untrained), the same tiny model briefly fine-tuned on synthetic
order dialogs (`mrdabak_pipeline_tests.training_data`, short prompt at a fixed now), and with
``--smollm2`` the pretrained SmolLM2-135M-Instruct base with the full prompt (the prompt-engineered
baseline). Items: held-out dialogs of the training distribution (``validation``) and the golden
set (``golden``, last turn), scored by evaluation's own metrics. Each model generates the same
prompts with ``constrained=False`` and ``True`` (greedy, same batch size and threads). Not one of
``python -m bench``'s figures: it trains a model, and its numbers are reported in the issue.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

BATCH_SIZE = 8


def _items(val_dir: Path, kind: str) -> list[Any]:
    from datasets import load_from_disk

    from mrdabak_pipeline.core.datasets.chat_format import load_golden
    from mrdabak_pipeline.core.evaluation.metrics import items_from_examples

    val = [dict(x, id=f"v{i}") for i, x in enumerate(load_from_disk(str(val_dir))["validation"].to_list())]
    items, _ = items_from_examples(val, "validation", last_turn_only=True)
    golden = [dict(g.as_example(), id=g.id, category=g.category) for g in load_golden(prompt=kind)]
    gitems, _ = items_from_examples(golden, "golden", last_turn_only=True)
    return items + gitems


def _with_prompt(items: list[Any], kind: str) -> list[list[dict[str, str]]]:
    from mrdabak_pipeline.core.prompts import with_system_prompt

    return [with_system_prompt(list(it.prompt), kind) for it in items]


def measure(name: str, model: dict[str, Any], items: list[Any], kind: str, max_new_tokens: int,
            threads: int) -> list[dict[str, Any]]:
    """One row per (source, constrained) for `model`."""
    from mrdabak_pipeline.core.evaluation.generate import LocalHFGenerator
    from mrdabak_pipeline.core.evaluation.metrics import score_replies, summarize

    prompts = _with_prompt(items, kind)
    rows = []
    for constrained in (False, True):
        gen = LocalHFGenerator(model["path"], model.get("base"), model.get("is_adapter", False), batch_size=BATCH_SIZE,
                               max_new_tokens=max_new_tokens, device="cpu", num_threads=threads,
                               constrained=constrained)
        gen.generate(prompts[:2])  # warm-up: weights, llguidance's tokenizer view
        run = gen.generate(prompts)
        gen.close()
        scores = score_replies(items, run.texts)
        for source in ("validation", "golden"):
            idx = [i for i, it in enumerate(items) if it.source == source]
            m = summarize([items[i] for i in idx], [scores[i] for i in idx])
            fields = [v.value for k, v in m.items() if k.startswith("field_acc/") and v.value is not None]
            rows.append({
                "model": name, "prompt": kind, "constrained": constrained, "source": source, "n": len(idx),
                "json_valid": m["json_valid"].value, "exact_match": m["exact_match"].value,
                "field_acc_mean": round(sum(fields) / len(fields), 4) if fields else None,
                "rule_violation_rate": m["rule_violation_rate"].value,
            })
        per_reply = run.wall_s / len(prompts)
        for r in rows[-2:]:
            r |= {"s_per_reply_all": round(per_reply, 4), "new_tokens_per_reply": round(run.total_new_tokens / len(prompts), 1),
                  "ms_per_token": round(1000 * run.wall_s / max(1, run.total_new_tokens), 2)}
        print(f"  {name} constrained={constrained}: {run.wall_s:.1f} s for {len(prompts)} replies, "
              f"{run.total_new_tokens} tokens", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--val", type=int, default=24)
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--smollm2", action="store_true", help="also the pretrained SmolLM2-135M base, full prompt")
    p.add_argument("--out", default=os.environ.get("MRDABAK_BENCH_CACHE", "bench/.cache") + "/constrained")
    args = p.parse_args(argv)

    import torch

    from mrdabak_pipeline.core.prompts import SEOUL, PromptKind, system_prompt
    from mrdabak_pipeline.core.training.config import TrainRecipe
    from mrdabak_pipeline.core.training.sft import resolve_base_model, train_sft
    from mrdabak_pipeline_tests.training_data import save_dataset

    torch.set_num_threads(args.threads)
    out = Path(args.out).absolute()
    ds = out / "dataset"
    now = datetime(2026, 12, 1, 15, 0, tzinfo=SEOUL)
    if not ds.exists():
        save_dataset(ds, args.train, args.val, system_prompt=system_prompt(now, PromptKind.SHORT))
    run_dir = out / f"tiny-{args.train}-{args.epochs}"
    result_file = run_dir / "result.json"
    if result_file.exists():
        result = json.loads(result_file.read_text())
    else:
        params = TrainRecipe.from_settings({"base_model": "tiny", "num_train_epochs": args.epochs,
                                            "num_threads": args.threads, "logging_steps": 10})
        result = train_sft(params, ds, run_dir, out / "models")
        result_file.write_text(json.dumps(result, default=str))
    print(f"trained tiny: eval loss {result['metrics'].get('eval_loss')}, {result['metrics'].get('train_runtime_s')}")
    models = {
        "tiny untrained": ({"path": result["base_model_path"]}, PromptKind.SHORT),
        "tiny trained": ({"path": result["model_path"], "base": result["base_model_path"],
                          "is_adapter": result["is_adapter"]}, PromptKind.SHORT),
    }
    if args.smollm2:
        models["smollm2-135m base"] = ({"path": resolve_base_model("smollm2-135m", out / "models", [])}, PromptKind.FULL)
    rows = []
    for name, (model, kind) in models.items():
        rows += measure(name, model, _items(ds, kind), kind, args.max_new_tokens, args.threads)
        (out / "results.json").write_text(json.dumps(rows, indent=1))  # after each model: partial runs count
    cols = ["model", "prompt", "source", "n", "constrained", "json_valid", "exact_match", "field_acc_mean",
            "rule_violation_rate", "s_per_reply_all", "new_tokens_per_reply", "ms_per_token"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
