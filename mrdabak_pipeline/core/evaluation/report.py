"""The evaluation report a person reads: Markdown with tables and plots, and a JSON with every figure.

Input is the plain dict from `runner.evaluate_models` (plus the gate outcome); output is a folder
with ``report.md``, ``report.json`` and PNG plots that the Markdown links relatively, so the folder
can be opened anywhere (a file browser, GitHub, the Dagster UI's path link).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

from mrdabak_pipeline.core.evaluation.metrics import FIELD_NAMES  # noqa: E402
from mrdabak_pipeline.core.runtime.files import atomic_write_bytes  # noqa: E402

#: The headline metrics, in report order, with their readable names.
HEADLINE: dict[str, str] = {
    "json_valid": "JSON validity",
    "exact_match": "orderState exact match",
    "ready_for_confirmation_acc": "readyForConfirmation accuracy",
    "needs_more_info_f1": "needsMoreInfo F1",
    "consistency": "consistency across rewordings",
    "rule_violation_rate": "rule violations (lower is better)",
    "ood_declined": "out-of-domain declined",
    "chrf": "chrF of message (0-100)",
    "judge": "LLM judge (1-5)",
}
_SCALE_100 = {"chrf"}
_RAW = {"judge"}


def _fmt(metric: Mapping[str, Any] | None, key: str) -> str:
    if not metric or metric.get("value") is None:
        return "n/a"
    v, lo, hi = metric["value"], metric.get("low"), metric.get("high")
    if key in _SCALE_100 or key in _RAW:
        text = f"{v:.1f}" + (f" [{lo:.1f}–{hi:.1f}]" if lo is not None else "")
    else:
        text = f"{v:.1%}" + (f" [{lo:.0%}–{hi:.0%}]" if lo is not None else "")
    return text


def _cell(text: Any, limit: int = 160) -> str:
    """A Markdown table cell: one line, pipes escaped, long text cut."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    # Model output is untrusted text: keep it from opening HTML tags or code spans in the table.
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
    return s.replace("|", "\\|") or " "


def _summary_keys(figures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The summary's metric rows: measured headline metrics, then per-field accuracy."""
    return [k for k in HEADLINE if any(k in f for f in figures.values())] + [f"field_acc/{f}" for f in FIELD_NAMES]


def summary_rows(results: Mapping[str, Any], source: str = "all") -> list[dict[str, Any]]:
    """The summary as records: ``metric``, one value per model, ``delta`` (fine-tuned − base), ``n``.

    Plain numbers (None when not measured), for a typed metadata table; `summary_table` is the
    same summary formatted with intervals for the Markdown report.
    """
    models = list(results["metrics"])
    figures = {m: results["metrics"][m].get(source, {}) for m in models}
    rows = []
    for k in _summary_keys(figures):
        values = {m: (figures[m].get(k) or {}).get("value") for m in models}
        base, tuned = values.get("base"), values.get("fine_tuned")
        rows.append({
            "metric": HEADLINE.get(k, k.replace("field_acc/", "accuracy: ")),
            **values,
            "delta": tuned - base if base is not None and tuned is not None else None,
            "n": max(int((figures[m].get(k) or {}).get("n") or 0) for m in models),
        })
    return rows


def summary_table(results: Mapping[str, Any], source: str = "all") -> str:
    """Metric | each model | Δ (fine-tuned − base) | n, as a Markdown table."""
    models = list(results["metrics"])
    figures = {m: results["metrics"][m].get(source, {}) for m in models}
    keys = _summary_keys(figures)
    has_delta = "base" in models and "fine_tuned" in models
    head = ["metric", *models, *(["Δ"] if has_delta else []), "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        row = [HEADLINE.get(k, k.replace("field_acc/", "accuracy: "))]
        row += [_fmt(figures[m].get(k), k) for m in models]
        if has_delta:
            b, t = figures["base"].get(k) or {}, figures["fine_tuned"].get(k) or {}
            if b.get("value") is None or t.get("value") is None:
                row.append("n/a")
            else:
                d = t["value"] - b["value"]
                row.append(f"{d:+.1f}" if k in _SCALE_100 or k in _RAW else f"{d:+.1%}")
        row.append(str(max(int((figures[m].get(k) or {}).get("n") or 0) for m in models)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _bar(value: float | None, width: int = 20) -> str:
    if value is None:
        return ""
    full = round(max(0.0, min(1.0, value)) * width)
    return "█" * full + "░" * (width - full)


def field_bars_table(results: Mapping[str, Any], source: str = "all") -> str:
    """Per-field accuracy with text bars, so the Markdown shows it even without the PNG."""
    models = list(results["metrics"])
    lines = ["| field | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for f in FIELD_NAMES:
        cells = []
        for m in models:
            v = (results["metrics"][m].get(source, {}).get(f"field_acc/{f}") or {}).get("value")
            cells.append(f"`{_bar(v)}` {v:.0%}" if v is not None else "n/a")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(results: Mapping[str, Any]) -> str:
    """Per model and mode: the prompt it ran with, prompt tokens per request, speed, seconds per reply.

    Sequential rows are the latency a customer waits for one turn; batched rows are throughput.
    """
    lines = [
        "| model | prompt | mode | prompts | prompt tokens/request | new tokens | wall s | s/reply | tokens/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, info in results["models"].items():
        for run in (info.get("generation"), info.get("sequential")):
            if run:
                ptok, spr = run.get("prompt_tokens_per_request"), run.get("seconds_per_reply")
                lines.append(
                    f"| {name} ({_cell(info['name'], 60)}) | {info.get('prompt_id') or 'as given'} | {run['mode']} | "
                    f"{run['n_prompts']} | {ptok if ptok is not None else 'n/a'} | {run['new_tokens']} | "
                    f"{run['wall_s']:.2f} | {spr if spr is not None else 'n/a'} | {run['tokens_per_s']:.1f} | {run['n_errors']} |"
                )
    return "\n".join(lines)


def worst_examples(results: Mapping[str, Any], model: str = "fine_tuned", n: int = 8) -> list[dict[str, Any]]:
    """The `n` items where `model` did worst (unparseable, rule-breaking, fewest fields right)."""
    def key(item: Mapping[str, Any]) -> tuple[Any, ...]:
        p = item["predictions"].get(model) or {}
        return (
            int(bool(p.get("valid_json"))),
            -int(bool(p.get("rule_violation"))),
            sum((p.get("field_correct") or {}).values()) + int(bool(p.get("exact_match"))),
            p.get("chrf") or 0.0,
            item["item_id"],
        )

    items = [it for it in results.get("items", []) if model in it["predictions"]]
    return sorted(items, key=key)[:n]


def worst_table(results: Mapping[str, Any], model: str = "fine_tuned", n: int = 8) -> str:
    models = list(results["metrics"])
    head = ["item", "customer said", "reference", *models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for it in worst_examples(results, model, n):
        cells = [_cell(it["item_id"], 40), _cell(it["last_user"], 100), _cell(it["reference"])]
        for m in models:
            p = it["predictions"].get(m) or {}
            mark = "✅" if p.get("exact_match") else ("⚠️" if p.get("valid_json") else "❌")
            cells.append(f"{mark} {_cell(p.get('prediction', ''))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_metrics(results: Mapping[str, Any], path: Path, source: str = "all") -> None:
    models = list(results["metrics"])
    keys = [k for k in HEADLINE if k not in _SCALE_100 and k not in _RAW]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(models))
    for j, m in enumerate(models):
        figs = results["metrics"][m].get(source, {})
        vals, errs = [], [[], []]
        for k in keys:
            f = figs.get(k) or {}
            v = f.get("value")
            vals.append(v if v is not None else 0.0)
            errs[0].append(v - f["low"] if v is not None and f.get("low") is not None else 0.0)
            errs[1].append(f["high"] - v if v is not None and f.get("high") is not None else 0.0)
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=m)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([HEADLINE[k].replace(" (lower is better)", "\n(lower is better)") for k in keys], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share (95% CI)")
    ax.set_title(f"Base vs fine-tuned ({source} items)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_fields(results: Mapping[str, Any], path: Path, source: str = "all") -> None:
    models = list(results["metrics"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(models))
    for j, m in enumerate(models):
        figs = results["metrics"][m].get(source, {})
        vals = [(figs.get(f"field_acc/{f}") or {}).get("value") or 0.0 for f in FIELD_NAMES]
        ax.barh([i + (j - (len(models) - 1) / 2) * width for i in range(len(FIELD_NAMES))], vals, width, label=m)
    ax.set_yticks(range(len(FIELD_NAMES)))
    ax.set_yticklabels(FIELD_NAMES)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title("Per-field accuracy of orderState")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_markdown(results: Mapping[str, Any], gate: Mapping[str, Any] | None = None, worst_n: int = 8) -> str:
    """The report as Markdown (plots referenced as ``metrics.png`` / ``field_accuracy.png``)."""
    sources = [s for s in results["sources"]]
    parts = [
        "# Mr. Daebak model evaluation: base vs fine-tuned",
        "",
        f"Generated {results.get('generated_at', datetime.now(UTC).isoformat(timespec='seconds'))}. "
        + "Models: "
        + ", ".join(f"**{k}** = `{v['name']}`" for k, v in results["models"].items())
        + ". Items: "
        + ", ".join(f"{s} {n}" for s, n in results["sources"].items())
        + f"; skipped (unscorable references): {len(results.get('skipped', []))}.",
        "",
        "Values are shares with 95% intervals (Wilson for proportions, bootstrap for F1/chrF/judge). "
        "A reply counts as valid only if the app's strict parser accepts it.",
    ]
    parts += [f"\n> {note}" for note in results.get("notes") or []]
    if gate is not None:
        parts += ["", f"## Promotion gate: {'PASSED' if gate['passed'] else 'BLOCKED'}", ""]
        parts += [f"- {'✅' if c['passed'] else '❌'} **{c['name']}**: {c['description']}" for c in gate["checks"]]
    parts += ["", "## All items", "", summary_table(results, "all"), "", "![metrics](metrics.png)"]
    for s in sources:
        parts += ["", f"## {s}", "", summary_table(results, s)]
    parts += ["", "## Per-field accuracy", "", field_bars_table(results), "", "![fields](field_accuracy.png)"]
    chrf = results.get("corpus_chrf") or {}
    if chrf:
        parts += ["", "Corpus chrF of `message`: " + ", ".join(f"{m} {v.get('all') or 0:.1f}" for m, v in chrf.items())]
    parts += ["", "## Prompt length and speed", "", throughput_table(results)]
    focus = "fine_tuned" if "fine_tuned" in results["metrics"] else next(iter(results["metrics"]))
    parts += [
        "",
        f"## Worst examples ({focus}), side by side",
        "",
        "✅ exact match · ⚠️ valid JSON, wrong state · ❌ not usable by the app",
        "",
        worst_table(results, focus, worst_n),
    ]
    skipped = results.get("skipped") or []
    if skipped:
        parts += ["", "## Skipped", ""]
        parts += [f"- {reason}: {n}" for reason, n in (results.get("skipped_by_reason") or {}).items()]
        parts += ["", "First ones:", ""] + [f"- {s['source']} `{s['example_id']}`: {s['reason']}" for s in skipped[:20]]
    return "\n".join(parts) + "\n"


def write_report(
    results: Mapping[str, Any],
    out_dir: str | Path,
    gate: Mapping[str, Any] | None = None,
    worst_n: int = 8,
) -> dict[str, str]:
    """Write ``report.md``, ``report.json`` and the plots into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_png, fields_png = out / "metrics.png", out / "field_accuracy.png"
    _plot_metrics(results, metrics_png)
    _plot_fields(results, fields_png)
    md_path, json_path = out / "report.md", out / "report.json"
    atomic_write_bytes(md_path, render_markdown(results, gate, worst_n).encode("utf-8"))
    atomic_write_bytes(json_path, json.dumps({**results, "gate": gate}, ensure_ascii=False, indent=2, default=str).encode("utf-8"))
    return {
        "markdown": str(md_path),
        "json": str(json_path),
        "metrics_plot": str(metrics_png),
        "field_plot": str(fields_png),
    }


def headline_floats(results: Mapping[str, Any], source: str = "all") -> dict[str, float]:
    """``model/metric`` -> value for every measured metric: the numbers Dagster plots over runs."""
    out: dict[str, float] = {}
    for model, by_source in results["metrics"].items():
        for key, metric in (by_source.get(source) or {}).items():
            if metric.get("value") is not None:
                out[f"{model}/{key}"] = float(metric["value"])
        gen = results["models"][model]["generation"]
        out[f"{model}/tokens_per_s"] = float(gen["tokens_per_s"])
        for key in ("prompt_tokens_per_request", "seconds_per_reply"):
            if gen.get(key) is not None:
                out[f"{model}/{key}"] = float(gen[key])
        seq = results["models"][model].get("sequential")
        if seq:
            out[f"{model}/tokens_per_s_sequential"] = float(seq["tokens_per_s"])
    return out

