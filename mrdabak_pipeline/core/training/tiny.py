"""Build the `tiny` base model: a 2-layer Llama with a byte-level BPE tokenizer learned from the corpus.

Why it exists: the hubs are unreachable here and a real pretrained model is too slow on 2 shared CPU
cores, yet the demo and the tests must exercise the real SFT/LoRA/save/reload path. A tokenizer
trained on the project's own dialogs keeps sequences short (the system prompt, repeated in every
dialog, collapses to a handful of tokens), so a random-init 2-layer model learns the JSON reply
format in about a minute on one CPU thread.

The chat template is ChatML with ``{% generation %}`` markers around the assistant content
*including* ``<|im_end|>``: TRL's ``assistant_only_loss`` then trains only on the replies and the
model learns to stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"

#: ChatML, with the assistant's content and end-of-turn token inside the generation markers.
CHATML_GENERATION_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

#: The architecture measured to learn the task in about a minute on one CPU thread.
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
_MANIFEST = "tiny_manifest.json"
#: A system prompt shared by at least this share of the dialogs becomes a single token.
SHARED_PROMPT_SHARE = 0.2



def render_chatml(messages: Sequence[dict[str, Any]]) -> str:
    """Plain ChatML text of a dialog: the tokenizer's training text (same bytes the template emits)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def corpus_fingerprint(texts: Sequence[str], vocab_size: int, seed: int) -> str:
    """Hash of everything the tiny base depends on: a changed corpus or setting rebuilds it."""
    recipe = {"v": vocab_size, "seed": seed, "arch": TINY_ARCH, "tpl": CHATML_GENERATION_TEMPLATE, "r": 2}
    h = hashlib.sha256(json.dumps(recipe).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def shared_prompts(dialogs: Sequence[Sequence[dict[str, Any]]], share: float = SHARED_PROMPT_SHARE) -> list[str]:
    """System prompts repeated across many dialogs (the production prompt is in every one)."""
    counts = Counter(m["content"] for d in dialogs for m in d if m["role"] == "system" and m["content"])
    return [text for text, n in counts.most_common() if n >= max(2, share * len(dialogs))]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, whole_tokens: Sequence[str] = ()) -> Any:
    """A byte-level BPE tokenizer (no unknown tokens: any byte sequence encodes) with ChatML specials.

    ``whole_tokens`` (the shared system prompt) become one added token each: constant text the
    model only has to condition on, so spending ~300 positions per dialog on it would only make
    training ~3x slower. Everything else uses the standard GPT-2 word split, so field values
    ("GRAND", 2) are the same tokens in the request and in the JSON reply, which a 2-layer model
    can learn to copy.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if whole_tokens:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in whole_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHATML_GENERATION_TEMPLATE,
        model_max_length=TINY_ARCH["max_position_embeddings"],
    )


def build_tiny_base(
    dialogs: Sequence[Sequence[dict[str, Any]]],
    models_dir: str | Path,
    *,
    vocab_size: int = 4096,
    seed: int = 0,
) -> Path:
    """Build (or reuse) ``models_dir/tiny-<fingerprint>`` from the training dialogs; return its absolute path.

    Content-addressed and immutable: the same corpus gives the same folder (a no-op second call),
    a new corpus a new folder, so adapters that store their base path never see it change.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    texts = [render_chatml(d) for d in dialogs]
    if not texts:
        raise ValueError("cannot build the tiny base model from an empty corpus")
    fingerprint = corpus_fingerprint(texts, vocab_size, seed)
    out = (Path(models_dir) / f"tiny-{fingerprint}").absolute()
    manifest = out / _MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint:
        return out

    tokenizer = train_tokenizer(texts, vocab_size, shared_prompts(dialogs))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_ARCH,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _MANIFEST).write_text(
        json.dumps(
            {"fingerprint": fingerprint, "random_init": True, "n_dialogs": len(texts), "vocab_size": len(tokenizer)},
            indent=2,
        )
    )
    if out.exists():  # a previous build without a manifest was interrupted
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def is_random_init(model_dir: str | Path) -> bool:
    """True for a base built here from random weights: LoRA on it must also train ``lm_head``."""
    manifest = Path(model_dir) / _MANIFEST
    return manifest.exists() and bool(json.loads(manifest.read_text()).get("random_init"))
