"""A tiny random-init chat model built on the spot, for tests that need real local generation.

No hub, no network: a byte-level BPE tokenizer trained on a few Korean/JSON lines with a ChatML
template, and a 1-layer Llama. It writes garbage, which is exactly what an untrained base does.
"""

from __future__ import annotations

from pathlib import Path

from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(out_dir: Path, extra_corpus: list[str] | None = None):
    """Train a small byte-level BPE on the system prompt and sample replies, save it with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        SYSTEM_PROMPT,
        assistant_target("안녕하세요! 어떤 디너를 원하세요?", {"needsMoreInfo": ["dinnerType"]}),
        assistant_target("발렌타인 디너 디럭스 2인분 맞으신가요?", {"dinnerType": "VALENTINE", "quantity": 2}),
        "발렌타인 디너 주세요 내일 저녁 7시 서울시 강남구",
        *(extra_corpus or []),
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, show_progress=False))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: Path, seed: int = 0, extra_corpus: list[str] | None = None) -> Path:
    """A random-init 1-layer Llama plus tokenizer saved in `out_dir` (returned)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir, extra_corpus)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        initializer_range=0.5,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def build_tiny_adapter(base_dir: Path, out_dir: Path, seed: int = 1) -> Path:
    """A LoRA adapter (random B so it changes outputs) on `base_dir`, with the tokenizer beside it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir, local_files_only=True).save_pretrained(out_dir)
    return out_dir
