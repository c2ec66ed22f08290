"""``python -m bench.data_variety [--sessions N] [--before REV]``: how varied the seeded customers'
phrasing is, before and after the seeder was broadened (issue 14 §5).

The measure is the number of distinct customer-utterance templates over N seeded sessions
(`core.seed.utterance_templates`: addresses, names, phone numbers, dates, times, dinner and style
names, quantities and other digits replaced by slots), so two utterances count once when they
differ only in values. "Before" is the seeder of git revision REV (default: the last commit
before the broadening), loaded from git into a throw-away module and normalized by today's
`utterance_template`, so both sides are measured with the same ruler. Also reported: the share
of utterances the single most common template covers, and distinct templates per 100 utterances.

Not one of the numbered figures of ``python -m bench``: it measures data, not speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

from mrdabak_pipeline.core.ingest import seed as seed_now
from mrdabak_pipeline.core.ingest.seed import utterance_templates

REPO = Path(__file__).resolve().parent.parent
#: The seeder before issue 14 §5 (the commit this work started from).
BEFORE_REV = "709773c"
END = date(2026, 11, 20)


def seeder_at(rev: str) -> ModuleType:
    """`mrdabak_pipeline/core/ingest/seed.py` as it was at git revision `rev`, imported standalone."""
    source = subprocess.run(
        ["git", "show", f"{rev}:mrdabak_pipeline/core/ingest/seed.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"seed_at_{rev}", f.name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def variety(seeder: Any, sessions: int, seed: int = 42) -> dict[str, float]:
    """Distinct user-utterance templates (and friends) over `sessions` undamaged sessions."""
    session_rows, message_rows, _ = seeder.generate(sessions, 14, seed, END, 0.0)
    templates: Counter[str] = utterance_templates(session_rows, message_rows)
    total = sum(templates.values())
    return {
        "sessions": sessions,
        "user_utterances": total,
        "distinct_templates": len(templates),
        "templates_per_100_utterances": round(100 * len(templates) / total, 1),
        "top_template_share": round(max(templates.values()) / total, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m bench.data_variety", description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' seeder")
    args = parser.parse_args(argv)
    out = {"before": variety(seeder_at(args.before), args.sessions), "after": variety(seed_now, args.sessions)}
    for label, row in out.items():
        print(f"{label:>6}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
