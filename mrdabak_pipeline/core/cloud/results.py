"""The job's result file (per-step metrics CSV) as numbers and a loss/accuracy plot.

Columns are read by *name*, never by position: OpenAI and Azure order and name them differently
(``train_accuracy`` vs ``train_mean_token_accuracy``, ``valid_mean_token_accuracy`` vs
``validation_mean_token_accuracy``) and have added columns over time. OpenAI also serves the file
base64-encoded, Azure as plain text; both are accepted.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
from pathlib import Path
from typing import Any

# canonical name -> accepted header spellings (lower-case)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step",),
    "train_loss": ("train_loss",),
    "train_accuracy": ("train_accuracy", "train_mean_token_accuracy"),
    "valid_loss": ("valid_loss", "validation_loss"),
    "valid_accuracy": ("valid_mean_token_accuracy", "validation_mean_token_accuracy", "valid_accuracy"),
    "full_valid_loss": ("full_valid_loss", "full_validation_loss"),
    "full_valid_accuracy": ("full_valid_mean_token_accuracy", "full_validation_mean_token_accuracy"),
}


class ResultFileError(ValueError):
    """The result file is not a metrics CSV we can read (reported, never silently ignored)."""


def decode_result_file(raw: bytes | str) -> str:
    """Plain CSV text from either a plain or a base64-encoded result file."""
    data = raw.encode() if isinstance(raw, str) else raw
    text = data.decode("utf-8-sig", errors="replace").strip()
    if _has_step_header(text):
        return text
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True).decode("utf-8-sig").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise ResultFileError("result file is neither a CSV with a 'step' column nor base64 of one") from None
    if not _has_step_header(decoded):
        raise ResultFileError("decoded result file has no 'step' column")
    return decoded


def _has_step_header(text: str) -> bool:
    header = text.split("\n", 1)[0]
    return "step" in {h.strip().lower() for h in header.split(",")}


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_result_csv(raw: bytes | str) -> list[dict[str, float | int | None]]:
    """One dict per step with the canonical keys of `COLUMN_ALIASES` (None where a cell is empty)."""
    reader = csv.DictReader(io.StringIO(decode_result_file(raw)))
    headers = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
    source: dict[str, str] = {}
    for canon, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in headers:
                source[canon] = headers[alias]
                break
    if "step" not in source:
        raise ResultFileError(f"result file has no step column (columns: {list(headers)})")
    rows: list[dict[str, float | int | None]] = []
    for line in reader:
        step = _number(line.get(source["step"]))
        if step is None:
            continue
        row: dict[str, float | int | None] = {"step": int(step)}
        for canon in COLUMN_ALIASES:
            if canon != "step":
                row[canon] = _number(line.get(source[canon])) if canon in source else None
        rows.append(row)
    return rows


def _last(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(values[-1]) if values else None


def summarize_curve(rows: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Final/min figures for metadata; the full-validation numbers are the ones worth comparing."""
    valid = [r["valid_loss"] for r in rows if r.get("valid_loss") is not None]
    return {
        "steps": len(rows),
        "final_train_loss": _last(rows, "train_loss"),
        "final_train_accuracy": _last(rows, "train_accuracy"),
        "final_valid_loss": _last(rows, "valid_loss"),
        "min_valid_loss": min(valid) if valid else None,
        "final_valid_accuracy": _last(rows, "valid_accuracy"),
        "full_valid_loss": _last(rows, "full_valid_loss"),
        "full_valid_accuracy": _last(rows, "full_valid_accuracy"),
    }


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss (left) and token accuracy (right) per step, saved as PNG; headless (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax, label in (
        ("train_loss", ax_loss, "train"),
        ("valid_loss", ax_loss, "validation"),
        ("full_valid_loss", ax_loss, "full validation"),
        ("train_accuracy", ax_acc, "train"),
        ("valid_accuracy", ax_acc, "validation"),
        ("full_valid_accuracy", ax_acc, "full validation"),
    ):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o" if len(points) < 30 else None)
    ax_loss.set(title="loss", xlabel="step")
    ax_acc.set(title="mean token accuracy", xlabel="step")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
