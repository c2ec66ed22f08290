"""The code location loads, and its shape is what the README and the UI promise."""

from __future__ import annotations

import subprocess
import sys

from dagster import AssetKey

from mrdabak_pipeline.definitions import defs

GROUPS = {
    "raw_conversation_logs": "ingestion",
    "cleaned_sessions": "preparation",
    "rejected_sessions": "preparation",
    "augmented_sessions": "preparation",
    "dataset_shards": "datasets",
    "openai_chat_dataset": "datasets",
    "huggingface_dataset": "datasets",
    "dpo_dataset": "datasets",
    "fine_tuned_model": "training",
    "evaluation_report": "evaluation",
    "promoted_model": "evaluation",
}


def test_every_asset_is_grouped_described_and_kinded() -> None:
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(GROUPS)
    for name, group in GROUPS.items():
        node = graph.get(AssetKey(name))
        assert node.group_name == group, name
        assert node.description and len(node.description) > 30, name
        assert node.kinds, name


def test_lineage_runs_from_raw_logs_to_promotion() -> None:
    graph = defs.resolve_asset_graph()
    upstream = graph.get_ancestor_asset_keys(AssetKey("promoted_model"))
    for name in ("raw_conversation_logs", "cleaned_sessions", "augmented_sessions", "huggingface_dataset", "fine_tuned_model", "evaluation_report"):
        assert AssetKey(name) in upstream, name


def test_dagster_definitions_validate_passes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "mrdabak_pipeline.definitions"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr
