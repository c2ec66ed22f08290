"""Local fine-tuning: the `tiny` base builder, the SmolLM2 and Gemma 3 GGUF conversions, SFT with TRL + peft.

No Dagster here. Heavy libraries (torch, transformers, trl, peft) are imported inside the
functions, so importing this package (e.g. by the Dagster definitions) stays cheap.
"""

from mrdabak_pipeline.core.training.config import TrainRecipe, run_key
from mrdabak_pipeline.core.training.gemma3 import ensure_gemma3
from mrdabak_pipeline.core.training.sft import (
    device_info,
    generate_reply,
    load_dialogs,
    load_model_for_inference,
    train_sft,
)
from mrdabak_pipeline.core.training.smollm2 import ensure_smollm2
from mrdabak_pipeline.core.training.tiny import build_tiny_base

__all__ = [
    "TrainRecipe",
    "build_tiny_base",
    "device_info",
    "ensure_gemma3",
    "ensure_smollm2",
    "generate_reply",
    "load_dialogs",
    "load_model_for_inference",
    "run_key",
    "train_sft",
]
