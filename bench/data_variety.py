"""``python -m bench.data_variety [--sessions N] [--before REV]``: how varied the seeded customers'
phrasing is, before and after the seeder's last broadening.

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
#: The seeder before its last broadening (multi-field turns, mid-order cancellations, scenario
#: weights). The first broadening (issue 14 §5) started from 709773c: 41 -> 2,444 templates per
#: 1,000 sessions, measured then; that seeder imports modules the layout redesign has since moved,
#: so it no longer loads standalone.
BEFORE_REV = "a231d2a"
END = date(2026, 11, 20)


#: Where the seeder lived, newest first (the layout redesign moved it into ``core/ingest``).
SEED_PATHS = ("mrdabak_pipeline/core/ingest/seed.py", "mrdabak_pipeline/core/seed.py")


def seeder_at(rev: str) -> ModuleType:
    """The seeder as it was at git revision `rev`, imported standalone."""
    for path in SEED_PATHS:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"no seeder at {rev} under {' or '.join(SEED_PATHS)}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"seed_at_{rev}", f.name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise SystemExit(f"the seeder at {rev} imports what has since moved ({exc}): pass a newer --before") from None
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
