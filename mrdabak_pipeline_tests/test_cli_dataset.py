"""`mrdabak dataset`: the guide's command writes the same files as the assets, outside Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrdabak_pipeline.cli import main
from mrdabak_pipeline.core.datasets.validation import validate_jsonl


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MRDABAK_DB_URL", f"sqlite:///{tmp_path / 'nothing.db'}")
    return tmp_path


def test_sample_openai_dataset(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "--format", "openai", "--sample", "--sessions", "40", "--augment", "1"]) == 0
    out = capsys.readouterr().out
    train = env / "data" / "datasets" / "openai" / "train.jsonl"
    report = validate_jsonl(train)
    assert report.ok and report.n_examples > 40  # originals + variants
    printed = Path(next(line for line in out.splitlines() if line.startswith("train:")).split()[1])
    assert printed.parent.parent.name == "sha256" and printed.samefile(train)  # the exact file; train.jsonl points at it
    assert "estimated cost on gpt-4o-mini" in out
    assert not (env / "nothing.db").exists() or (env / "nothing.db").stat().st_size == 0


def test_sample_huggingface_dataset_in_text_target(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datasets import load_from_disk

    out_dir = env / "out"
    assert main(["dataset", "--format", "huggingface", "--sample", "--sessions", "30", "--augment", "0",
                 "--target", "text", "--out", str(out_dir)]) == 0
    [folder] = (out_dir / "huggingface").iterdir()
    dd = load_from_disk(str(folder / "dataset"))
    assert len(dd["train"]) + len(dd["validation"]) >= 25
    first = json.loads((folder / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert not first["messages"][2]["content"].startswith("{")  # text target: no JSON


def test_empty_database_is_a_clear_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mrdabak_pipeline.core.ingest.db import create_schema, make_engine

    create_schema(make_engine(f"sqlite:///{env / 'empty.db'}"))
    assert main(["dataset", "--db-url", f"sqlite:///{env / 'empty.db'}"]) == 1
    assert "no training examples" in capsys.readouterr().err
