"""The offline base models compared on this task: tokenizer cost on Korean, CPU training and
generation speed, memory, and what a short CPU LoRA fine-tune of Gemma 3 270M reaches.

``python -m bench.base_models [--only tokens,steps,generation,vocab_cut,cpu_precision,finetune] [--budget-s 360]``
recomputes the figures and writes ``bench/base_models.json`` (kept in git: the recorded numbers,
with the machine line and load average, since a shared 2-core box swings with its neighbours).
Not part of ``python -m bench``: the full set takes ~25 min of CPU.

Data: like the demo, a temporary SQLite DB seeded with ``mrdabak seed`` and the dataset built with
``mrdabak dataset --format huggingface`` (which also writes the OpenAI JSONL), short prompt.
Every training or generation measurement runs in a fresh subprocess, so its peak RSS
(``ru_maxrss``) is that measurement's alone.

What is measured (the same `train_sft` / `LocalHFGenerator` code the pipeline runs):
- tokens per Hangul syllable of the validation users' turns, per tokenizer (tiny is built from
  the training dialogs, so it is the corpus-fitted lower bound, not a general tokenizer);
- LoRA (r 16, all linear layers) seconds per optimizer step, batch 4 whole dialogs, on 1 and 2
  threads; with and without bf16 autocast and the label-positions-only LM head;
- generation tokens/s at batch 1 and batch 8 (greedy, KV cache), 1 thread;
- ``vocab_cut``: the step and generation figures of gemma3 and gemma3-ko (its vocabulary cut to
  Korean orders) back to back in one run, and their ratios;
- ``cpu_precision``: gemma3-ko on 2 threads, LoRA steps as the pipeline runs them (bf16 autocast,
  frozen base stored in bf16, SDPA attention) against eager attention and against fp32; generation
  at batch 8 in fp32 and in bf16 (what evaluation does for a model trained under bf16 autocast);
- zero-shot (base) and after a time-boxed LoRA fine-tune: JSON validity and field accuracy on
  held-out validation replies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, REPO_ROOT, cache_dir

OUT_PATH = BENCH_DIR / "base_models.json"
SESSIONS, DAYS, SEED = 250, 14, 7
GEMMA = "gemma3"
GEMMA_KO = "gemma3-ko"
LORA = {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "learning_rate": 5e-4, "per_device_train_batch_size": 4,
        "warmup_steps": 0.1, "eval_strategy": "no", "resume": False, "save_total_limit": 1, "logging_steps": 1,
        "lr_scheduler_type": "constant_with_warmup"}


def hangul_syllables(text: str) -> int:
    """Precomposed Hangul syllables (U+AC00..U+D7A3): the unit Korean readers count."""
    return sum("\uac00" <= ch <= "\ud7a3" for ch in text)


def tokens_per_syllable(tokenizer: Any, texts: list[str]) -> float:
    """Tokens (no special tokens) per Hangul syllable over `texts`."""
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    syllables = sum(hangul_syllables(t) for t in texts)
    return tokens / syllables


def work_dir() -> Path:
    return cache_dir() / "base_models"


def dataset_path() -> Path:
    """Seed the temp SQLite DB and build the dataset with the CLI once (cached)."""
    root = work_dir() / "data"
    done = root / "dataset_path.txt"
    if done.exists():
        return Path(done.read_text().strip())
    root.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{root / 'raw.db'}"
    cli = [str(Path(sys.executable).parent / "mrdabak")]
    subprocess.run([*cli, "seed", "--db-url", db, "--sessions", str(SESSIONS), "--days", str(DAYS),
                    "--seed", str(SEED), "--end-date", "2026-11-30"], check=True)
    out = subprocess.run([*cli, "dataset", "--format", "huggingface", "--db-url", db, "--out", str(root / "ds"),
                          "--prompt", "short"], check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("huggingface:"))
    path = Path(line.split()[1])
    done.write_text(str(path))
    return path


def _validation_examples(ds: Path) -> list[dict[str, Any]]:
    from datasets import load_from_disk

    split = load_from_disk(str(ds))["validation"]
    return [{"id": f"val-{i}", "messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
            for i, msgs in enumerate(split["messages"])]


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- measurements (each runs in its own process: `--worker NAME --args JSON`) -------------------


def measure_tokens(args: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from mrdabak_pipeline.core.training.sft import GEMMA3, SMOLLM2, TINY, load_dialogs, resolve_base_model

    ds = dataset_path()
    dialogs = [list(d) for d in load_dialogs(ds)["train"]["messages"]]
    val = _validation_examples(ds)
    users = [m["content"] for ex in val for m in ex["messages"] if m["role"] == "user" and hangul_syllables(m["content"])]
    replies = [m["content"] for ex in val for m in ex["messages"] if m["role"] == "assistant"]
    models = work_dir() / "models"
    out: dict[str, Any] = {"user_texts": len(users), "user_syllables": sum(map(hangul_syllables, users))}
    for name in (TINY, SMOLLM2, GEMMA3):
        path = resolve_base_model(name, models, dialogs)
        tok = AutoTokenizer.from_pretrained(path)
        dialog_tokens = [len(tok.apply_chat_template(ex["messages"], tokenize=True)["input_ids"]) for ex in val]
        out[name] = {
            "tokens_per_syllable_user_turns": round(tokens_per_syllable(tok, users), 3),
            "tokens_per_syllable_replies": round(tokens_per_syllable(tok, replies), 3),
            "mean_tokens_per_validation_dialog": round(statistics.mean(dialog_tokens), 1),
            "vocab_size": len(tok),
        }
    return out


class _StepClock:
    """Wall time at the end of every optimizer step (a TrainerCallback built lazily)."""

    def __new__(cls):  # noqa: ANN204
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []

            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
                if not self.times:
                    self.times.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                self.times.append(time.perf_counter())

        return Clock()


class _Deadline:
    """Stops training after `seconds` of training wall time (the fine-tune's time budget)."""

    def __new__(cls, seconds: float):  # noqa: ANN204
        from transformers import TrainerCallback

        class Deadline(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                if time.perf_counter() - self.t0 >= seconds:
                    control.should_training_stop = True

        return Deadline()


def measure_steps(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per LoRA optimizer step: the median of steps 2..n (step 1 warms the allocator)."""
    from mrdabak_pipeline.core.training.config import TrainRecipe
    from mrdabak_pipeline.core.training.sft import train_sft

    clock = _StepClock()
    attn = {"attn_implementation": args["attn"]} if args.get("attn") else {}
    params = TrainRecipe.from_settings({**LORA, "base_model": args.get("base", GEMMA), "max_steps": args["steps"],
                                    "num_threads": args["threads"], "bf16": args["bf16"],
                                    "sparse_head": args["sparse_head"], **attn})
    out_dir = work_dir() / "runs" / (f"steps-{args.get('base', GEMMA)}-{args['threads']}-{args['bf16']}-{args['sparse_head']}"
                                     f"-{args.get('attn', 'default')}")
    result = train_sft(params, dataset_path(), out_dir, work_dir() / "models", log=lambda s: None, callbacks=[clock])
    steps = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return {"s_per_step": round(statistics.median(steps[1:] or steps), 2), "steps_s": [round(s, 2) for s in steps],
            "tokens_per_s": result["metrics"]["tokens_per_s"], "peak_rss_mb": _peak_rss_mb()}


def _generator(model: dict[str, Any], batch_size: int, max_new_tokens: int, threads: int, bf16: bool = False) -> Any:
    from mrdabak_pipeline.core.evaluation.generate import LocalHFGenerator

    return LocalHFGenerator(model["model_path"], base_model_path=model.get("base_model_path"),
                            is_adapter=model.get("is_adapter", False), batch_size=batch_size,
                            max_new_tokens=max_new_tokens, device="cpu", num_threads=threads, bf16=bf16)


def _items(n: int) -> list[Any]:
    from mrdabak_pipeline.core.evaluation.metrics import items_from_examples

    items, _ = items_from_examples(_validation_examples(dataset_path()), "validation", max_items=None)
    # Spread over dialogs: every k-th item, so a handful covers several conversations and turns.
    step = max(1, len(items) // n)
    return items[::step][:n]


def measure_generation(args: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s of greedy generation, batch 1 vs batch 8, same prompts and budget."""
    from mrdabak_pipeline.core.training.sft import resolve_base_model

    model = {"model_path": resolve_base_model(args.get("base", GEMMA), work_dir() / "models", [])}
    prompts = [it.prompt for it in _items(args["prompts"])]
    out: dict[str, Any] = {"prompts": len(prompts), "max_new_tokens": args["max_new_tokens"], "threads": args["threads"]}
    for bs in args.get("batch_sizes", (1, 8)):
        gen = _generator(model, bs, args["max_new_tokens"], args["threads"], bf16=args.get("bf16", False))
        gen.generate(prompts[:1], mode="sequential")  # load + warm up outside the clock
        res = gen.generate(prompts, mode="batched" if bs > 1 else "sequential")
        out[f"batch_{bs}"] = {"tokens_per_s": round(res.tokens_per_s, 2), "new_tokens": res.total_new_tokens,
                              "wall_s": round(res.wall_s, 1)}
        gen.close()
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _quality(model: dict[str, Any], n_items: int, threads: int) -> dict[str, Any]:
    from mrdabak_pipeline.core.evaluation.metrics import FIELD_NAMES, score_replies

    items = _items(n_items)
    gen = _generator(model, 8, 256, threads)
    res = gen.generate([it.prompt for it in items])
    gen.close()
    scores = score_replies(items, res.texts)
    valid = [s for s in scores if s.valid_json]
    return {
        "items": len(items),
        "json_valid": round(len(valid) / len(items), 3),
        "field_accuracy": {f: round(sum(s.field_correct[f] for s in scores) / len(items), 3) for f in FIELD_NAMES},
        "exact_state": round(sum(s.exact_match for s in scores) / len(items), 3),
        "generation_tokens_per_s": round(res.tokens_per_s, 2),
        "generation_wall_s": round(res.wall_s, 1),
    }


def measure_zero_shot(args: dict[str, Any]) -> dict[str, Any]:
    from mrdabak_pipeline.core.training.gemma3 import ensure_gemma3

    model = {"model_path": str(ensure_gemma3(work_dir() / "models"))}
    return {**_quality(model, args["items"], args["threads"]), "peak_rss_mb": _peak_rss_mb()}


def measure_finetune(args: dict[str, Any]) -> dict[str, Any]:
    """LoRA on Gemma for `budget_s` of training wall time (cosine over the full epoch it would
    take is pointless in a few minutes: constant lr after warmup), then the held-out items."""
    from mrdabak_pipeline.core.training.config import TrainRecipe
    from mrdabak_pipeline.core.training.sft import train_sft

    params = TrainRecipe.from_settings({**LORA, "base_model": GEMMA, "num_train_epochs": 1.0, "warmup_steps": 3,
                                    "num_threads": args["threads"], "logging_steps": 5})
    out_dir = work_dir() / "runs" / "finetune"
    result = train_sft(params, dataset_path(), out_dir, work_dir() / "models", log=print,
                       callbacks=[_Deadline(args["budget_s"])])
    train_rss = _peak_rss_mb()
    m = result["metrics"]
    model = {"model_path": result["model_path"], "base_model_path": result["base_model_path"], "is_adapter": True}
    return {
        "budget_s": args["budget_s"], "train_wall_s": m["train_wall_s"], "optimizer_steps": m["global_step"],
        "dialogs_seen": m["global_step"] * params.value("per_device_train_batch_size"), "train_dialogs": m["train_examples"],
        "epochs": round(m["epochs"], 3), "final_train_loss": m["final_train_loss"], "peak_rss_train_mb": train_rss,
        "held_out": _quality(model, args["items"], args["threads"]), "peak_rss_mb": _peak_rss_mb(),
    }


WORKERS = {"tokens": measure_tokens, "steps": measure_steps, "generation": measure_generation,
           "zero_shot": measure_zero_shot, "finetune": measure_finetune}


def _spawn(name: str, args: dict[str, Any]) -> dict[str, Any]:
    print(f"-- {name} {args}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.base_models", "--worker", name, "--args", json.dumps(args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], flush=True)
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"   {json.dumps(result, ensure_ascii=False)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.base_models", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="tokens,steps,generation,zero_shot,finetune")
    p.add_argument("--budget-s", type=float, default=360.0, help="fine-tune training wall time")
    p.add_argument("--items", type=int, default=12, help="held-out replies scored")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per speed run (the first is not timed)")
    p.add_argument("--out", type=Path, default=OUT_PATH)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        result = WORKERS[a.worker](json.loads(a.args))
        print(json.dumps(result, ensure_ascii=False))
        return result

    from bench.__main__ import machine

    wanted = {w.strip() for w in a.only.split(",") if w.strip()}
    dataset_path()
    record: dict[str, Any] = json.loads(a.out.read_text()) if a.out.exists() else {}

    def save(key: str, value: dict[str, Any]) -> None:
        # After every measurement, with the machine line and load of that moment: a run stopped
        # half-way keeps what it measured, and each figure says how busy the box was.
        record[key] = {**value, "machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M %Z")}
        a.out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    if "tokens" in wanted:
        save("tokens", _spawn("tokens", {}))
    if "steps" in wanted:
        runs = {
            "1_thread_bf16_sparse_head": {"threads": 1, "bf16": True, "sparse_head": True},
            "2_threads_bf16_sparse_head": {"threads": 2, "bf16": True, "sparse_head": True},
            "1_thread_bf16_full_head": {"threads": 1, "bf16": True, "sparse_head": False},
            "1_thread_fp32_full_head": {"threads": 1, "bf16": False, "sparse_head": False},
        }
        for k, v in runs.items():
            save(f"lora_steps_gemma3_{k}", {"batch": "4 whole dialogs", **_spawn("steps", {**v, "steps": a.steps})})
    if "generation" in wanted:
        save("generation_gemma3", _spawn("generation", {"threads": 1, "prompts": 8, "max_new_tokens": 48}))
    if "vocab_cut" in wanted:  # gemma3 vs gemma3-ko back to back: the same steps and prompts, 1 thread
        step_args = {"threads": 1, "bf16": True, "sparse_head": True, "steps": a.steps}
        steps = {b: _spawn("steps", {**step_args, "base": b}) for b in (GEMMA, GEMMA_KO)}
        gen = {b: _spawn("generation", {"threads": 1, "prompts": 8, "max_new_tokens": 48, "base": b}) for b in (GEMMA, GEMMA_KO)}
        save("vocab_cut_gemma3_ko_vs_gemma3", {
            "lora_steps_1_thread_bf16_sparse_head": steps, "generation_1_thread": gen,
            "step_speedup": round(steps[GEMMA]["s_per_step"] / steps[GEMMA_KO]["s_per_step"], 2),
            "generation_speedup_batch_8": round(gen[GEMMA_KO]["batch_8"]["tokens_per_s"] / gen[GEMMA]["batch_8"]["tokens_per_s"], 2),
        })
    if "cpu_precision" in wanted:  # what the pipeline does on a bf16 CPU vs the alternatives, 2 threads
        step_args = {"threads": 2, "bf16": True, "sparse_head": True, "steps": a.steps, "base": GEMMA_KO}
        steps = {"bf16_base_sdpa_attention": _spawn("steps", step_args),
                 "bf16_base_eager_attention": _spawn("steps", {**step_args, "attn": "eager"}),
                 "fp32": _spawn("steps", {**step_args, "bf16": False})}
        gen_args = {"threads": 2, "prompts": 8, "max_new_tokens": 96, "base": GEMMA_KO, "batch_sizes": [8]}
        gen = {p: _spawn("generation", {**gen_args, "bf16": p == "bf16"}) for p in ("fp32", "bf16")}
        save("cpu_precision_gemma3_ko", {
            "lora_steps_2_threads": steps, "generation_2_threads": gen,
            "step_speedup_vs_eager": round(steps["bf16_base_eager_attention"]["s_per_step"]
                                           / steps["bf16_base_sdpa_attention"]["s_per_step"], 2),
            "step_speedup_vs_fp32": round(steps["fp32"]["s_per_step"] / steps["bf16_base_sdpa_attention"]["s_per_step"], 2),
            "generation_speedup_batch_8": round(gen["bf16"]["batch_8"]["tokens_per_s"] / gen["fp32"]["batch_8"]["tokens_per_s"], 2),
        })
    if "zero_shot" in wanted:
        save("zero_shot_gemma3", _spawn("zero_shot", {"threads": 1, "items": a.items}))
    if "finetune" in wanted:
        save("finetune_gemma3", _spawn("finetune", {"threads": 1, "budget_s": a.budget_s, "items": a.items}))
    print(f"wrote {a.out}")
    return record


if __name__ == "__main__":
    main()
