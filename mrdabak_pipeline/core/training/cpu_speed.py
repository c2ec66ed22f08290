"""What makes LoRA on a real pretrained base affordable on a CPU (measured in ``bench/base_models.py``).

- bf16 autocast: on a CPU with native bf16 (AVX512-BF16 / AMX) the matmuls run about twice as fast
  as fp32 (Gemma 3 270M, 1 thread: ~5 s/step against 10-13 s); master weights stay fp32. A
  random-init base (`tiny`) keeps fp32: its measured recipe was tuned there and it is tiny anyway.
- The LM head only on label positions: TRL's fused LM head scores only the positions with a
  label on Triton devices, but every position on a CPU (its comment: to keep tile shapes stable
  for compilers, which eager CPU execution does not need). With a 262k-token vocabulary the head
  is the largest matmul of the step, and with assistant-only loss most positions carry no label,
  so `label_positions_only_head` switches the compact path on for the CPU too, for the duration
  of one training run. The result is the same loss (the skipped positions were masked to zero).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bf16 matmuls natively (oneDNN says so), so autocast pays."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe: stay in fp32
        return False


@contextlib.contextmanager
def label_positions_only_head(enabled: bool = True) -> Iterator[bool]:
    """Within the block, TRL's fused LM head projects only label positions on the CPU as well.

    Yields whether the switch is active (False when disabled or when this TRL has no such hook,
    in which case training is unchanged, just slower). Restores TRL's own rule on exit.
    """
    if not enabled:
        yield False
        return
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency
        yield False
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield False
        return

    def compact_on_cpu(device) -> bool:  # noqa: ANN001 - a torch.device
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = compact_on_cpu
    try:
        yield True
    finally:
        trl_utils._use_triton = original
