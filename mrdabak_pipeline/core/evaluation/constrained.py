"""Schema-constrained decoding for local transformers models, with llguidance.

At every step a `JsonSchemaLogitsProcessor` asks one llguidance matcher per row which tokens keep
the output a prefix of a reply the schema (`core.reply_schema`) allows, and sets every other
token's logit to -inf; once the JSON is complete only an end-of-turn token is allowed. Greedy
decoding then picks the model's best *valid* token, so even an untrained model writes parseable
JSON, and a trained one is unchanged wherever it already followed the format.

Why llguidance: it is a small self-contained wheel (Rust, no torch/triton build) that computes
masks in microseconds on CPU, and it is the engine vLLM, SGLang and llama.cpp use for the same
job, so local and served constrained decoding agree. Its own torch helper is `torch.compile`d
(needs a C compiler on CPU), so the mask is applied here with two plain tensor ops instead.
llguidance assumes the tokenizer can write every byte (true of byte-level BPE and of
SentencePiece with byte fallback, i.e. every chat model we fine-tune); a toy vocabulary without,
say, "v" gets masks that do not honour the grammar.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from mrdabak_pipeline.core.reply_schema import reply_json_schema

#: Compact separators and no free whitespace: the exact shape `domain.assistant_target` writes,
#: and a model cannot spend its token budget on blanks.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


@cache
def reply_grammar() -> str:
    """The llguidance grammar of the reply schema (built once per process)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(reply_json_schema()), overrides=_JSON_OPTIONS  # type: ignore[arg-type]
    )


def ll_tokenizer(hf_tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> Any:
    """llguidance's view of a (fast) HF tokenizer; ~1 s for a 150k vocabulary, so callers cache it.

    `vocab_size` is the model's logits width (often padded past the tokenizer's size);
    `eos_ids` are the tokens that may end the reply once the JSON is complete.
    """
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))


class JsonSchemaLogitsProcessor:
    """A transformers logits processor that keeps every row of a batch inside `grammar`.

    One instance serves one ``generate`` call: `prompt_len` is the (left-padded) prompt width, so
    the tokens after it are what each row has generated; the processor feeds each new token to the
    row's matcher before masking the next step. llguidance stops a matcher as soon as nothing but
    the end can follow (the closing brace), so a stopped row may only take an end-of-turn token;
    once it has, `generate` pads it by itself.
    """

    def __init__(self, tokenizer: Any, grammar: str, batch_size: int, prompt_len: int) -> None:
        import llguidance
        import llguidance.numpy

        self._np = llguidance.numpy
        self.matchers = [llguidance.LLMatcher(tokenizer, grammar) for _ in range(batch_size)]
        errors = [m.get_error() for m in self.matchers if m.is_error()]
        if errors:
            raise ValueError(f"invalid grammar: {errors[0]}")
        self.prompt_len = prompt_len
        self.eos_ids = list(tokenizer.eos_tokens)
        self.vocab_size = tokenizer.vocab_size
        self._mask = llguidance.numpy.allocate_token_bitmask(batch_size, self.vocab_size)
        self._seen = prompt_len
        #: Rows stopped at a dead end (see `__call__`): their replies are cut short, not valid JSON.
        self.dead_ends: set[int] = set()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        width = input_ids.shape[1]
        if width > self._seen:  # one new token per row since the last call
            last = input_ids[:, -1].tolist()
            for i, (matcher, token) in enumerate(zip(self.matchers, last, strict=True)):
                if i not in self.dead_ends and not matcher.is_stopped() and not matcher.is_error():
                    matcher.consume_token(int(token))
            self._seen = width
        # A matcher in error (it never should be: the mask forbids what it would reject) is let go.
        active = [i for i, m in enumerate(self.matchers) if not m.is_error()]
        if not active:
            return scores
        for i in active:
            if i in self.dead_ends or self.matchers[i].is_stopped():
                self._only_eos(i)
                continue
            self._np.fill_next_token_bitmask(self.matchers[i], self._mask, i)
            if not self._mask[i].any():
                # A dead end: nothing may follow (a safeguard; with a tokenizer that can write every
                # byte it does not happen). End the reply rather than let the row write unmasked text.
                self.dead_ends.add(i)
                self._only_eos(i)
        words = torch.from_numpy(self._mask[active]).to(scores.device)
        bits = (words.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32, device=scores.device)) & 1
        allowed = bits.reshape(len(active), -1)[:, : scores.shape[1]].bool()
        if allowed.shape[1] < scores.shape[1]:  # logits wider than the mask: the rest is not allowed
            pad = torch.zeros(len(active), scores.shape[1] - allowed.shape[1], dtype=torch.bool, device=scores.device)
            allowed = torch.cat([allowed, pad], dim=1)
        rows = torch.tensor(active, device=scores.device)
        scores[rows] = scores[rows].masked_fill(~allowed, float("-inf"))
        return scores

    def _only_eos(self, row: int) -> None:
        words = self._mask.view(np.uint32)
        words[row] = 0
        for t in self.eos_ids:
            words[row, t // 32] |= np.uint32(1 << (t % 32))

    @property
    def n_errors(self) -> int:
        """Rows whose generated token the grammar rejected (should stay 0: the mask forbids it)."""
        return sum(m.is_error() for m in self.matchers)
