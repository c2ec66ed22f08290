"""No customer value reaches the Dagster instance: metadata, check results and run logs.

A raw DB gets seeded sessions plus a few planted ones full of PII (name, phones, e-mail, RRN,
delivery address, a name said without any cue). The daily chain and the datasets are materialized
into a real instance (a temporary DAGSTER_HOME with the repo's dagster.yaml, SQLite storage); then
every event of every run is read back and searched for each planted value, and so is every byte
under DAGSTER_HOME. The planted sessions sort first, so any preview that shows a row's text would
show theirs.

The `no_pii` check is tested on a value its own replacer misses: it must fail and withhold the table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import insert

from mrdabak_pipeline.core.ingest.db import make_engine, message_table, session_table
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.prepare.pii import fake_pools
from mrdabak_pipeline.defs.datasets import assets as D
from mrdabak_pipeline.defs.ingestion.assets import raw_conversation_logs
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.preparation.assets import augment_sessions_asset, clean_sessions
from mrdabak_pipeline.defs.resources import DataPathsResource, RawDatabaseResource
from mrdabak_pipeline_tests.dataset_helpers import state

REPO_ROOT = Path(__file__).resolve().parents[3]
DAY = "2025-03-01"
START = datetime(2025, 3, 1, 8, 0)

NAME = "탁민준"
UNCUED_NAME = "홍길순"  # said without 님/씨/이름은: the pseudonymizer does not know it is a name
EMAIL = "planted.kim88@example.org"
PHONE = "010-4821-7739"
PHONE_2 = "02-3481-5520"
RRN = "880412-1234567"
ADDRESS = "부산광역시 해운대구 센텀중앙로 97 센텀스카이 103동 2201호"
ROAD = "센텀중앙로 97"
REJECTED_NAME = "변채운"
REJECTED_PHONE = "010-9036-2254"
REJECTED_EMAIL = "rejected.lee@example.net"
PLANTED = [NAME, UNCUED_NAME, EMAIL, PHONE, PHONE.replace("-", ""), PHONE_2, RRN, ADDRESS, ROAD,
           REJECTED_NAME, REJECTED_PHONE, REJECTED_EMAIL]

KEPT_ID = "00000000-0000-4000-8000-000000000001"
REJECTED_ID = "00000000-0000-4000-8000-000000000002"


def _state(ready: bool = False, **fields: Any) -> str:
    return json.dumps(state(ready, **fields), ensure_ascii=False)


def _plant(url: str, extra_user_text: str = "") -> None:
    """Seeded sessions + one kept and one rejected session carrying every planted value."""
    seed_database(make_engine(url), sessions=40, days=1, seed=11, end_date=date(2025, 3, 1), damage_rate=0.0)
    full = dict(dinnerType="VALENTINE", servingStyle="DELUXE", quantity=1, deliveryDate="2025-03-02",
                deliveryTime="19:00", deliveryAddress=ADDRESS)
    kept = [
        ("USER", f"{EMAIL} 로 영수증 주세요. 받는 사람은 {UNCUED_NAME}, 제 동생이에요. {extra_user_text}", None),
        ("ASSISTANT", "네, 어떤 디너를 주문하시겠어요?", _state()),
        ("USER", f"{PHONE}로 연락 주세요. 주소는 {ADDRESS}예요. 발렌타인 디럭스 1개 내일 저녁 7시요.", None),
        ("ASSISTANT", f"{NAME}님, 발렌타인 디너 디럭스 1개를 3월 2일 19:00에 {ADDRESS}로 보내 드릴까요?", _state(True, **full)),
        ("USER", f"네. 주민번호 {RRN} 필요하면 말씀하세요. 집 전화는 {PHONE_2}예요.", None),
        ("ASSISTANT", "주문이 확정되었습니다. 감사합니다!", _state(True, **full)),
    ]
    rejected = [  # no assistant answer: quarantined as no_exchange, never pseudonymized
        ("USER", f"{REJECTED_PHONE} {REJECTED_EMAIL} 저 {REJECTED_NAME}인데요", None),
        ("USER", f"{REJECTED_NAME} 주문 취소요 {REJECTED_PHONE}", None),
    ]
    with make_engine(url).begin() as conn:
        for sid, name, rows in ((KEPT_ID, NAME, kept), (REJECTED_ID, REJECTED_NAME, rejected)):
            end = START + timedelta(seconds=10 * len(rows))
            conn.execute(insert(session_table), [{"id": sid, "customer_id": 7, "customer_name": name,
                                                  "status": "CONFIRMED", "created_at": START, "updated_at": end}])
            conn.execute(insert(message_table), [
                {"session_id": sid, "role": role, "content": text, "order_state": st, "created_at": START + timedelta(seconds=10 * i)}
                for i, (role, text, st) in enumerate(rows)
            ])


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """A persistent instance in a temporary DAGSTER_HOME, configured by the repo's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as inst:
        yield inst


def _resources(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "raw_db": RawDatabaseResource(url=url),
        "data_paths": DataPathsResource(root=str(tmp_path / "data")),
        "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "storage")),
    }


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a deserialized-to-JSON structure (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _event_log_text(instance: dg.DagsterInstance) -> tuple[str, dict[str, int]]:
    """All text of every event of every run (messages, metadata, check results), and counts by type."""
    texts: list[str] = []
    kinds: dict[str, int] = {}
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            texts.extend(_strings(json.loads(dg.serialize_value(entry))))
            if entry.dagster_event is not None:
                kind = entry.dagster_event.event_type_value
                kinds[kind] = kinds.get(kind, 0) + 1
    return "\n".join(texts), kinds


def _home_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def _hits(text: str, blob: bytes, values: list[str]) -> dict[str, str]:
    """Planted values found in the event text or, raw or JSON-escaped, in the instance's files."""
    found = {}
    for v in values:
        if v in text:
            found[v] = "event log"
        elif v.encode() in blob or json.dumps(v)[1:-1].encode() in blob:
            found[v] = "DAGSTER_HOME file"
    return found


def test_no_planted_pii_anywhere_in_the_instance(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    assert not set(PLANTED) & set(fake_pools().names), "a planted name could legitimately appear as a fake"
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    _plant(url)
    resources = _resources(tmp_path, url)
    daily = dg.materialize([raw_conversation_logs, clean_sessions, augment_sessions_asset, D.dataset_shards], partition_key=DAY,
                           instance=instance, resources=resources)
    assert daily.success
    checks = {e.check_name: e.passed for e in daily.get_asset_check_evaluations()}
    assert checks["no_pii"] and checks["conservation"], checks
    datasets = dg.materialize(
        [raw_conversation_logs, clean_sessions, augment_sessions_asset, D.dataset_shards, D.openai_chat_dataset, D.huggingface_dataset,
         D.dpo_dataset, D.openai_chat_format, D.openai_chat_token_limits, D.huggingface_loadable],
        selection=[dg.AssetKey("openai_chat_dataset"), dg.AssetKey("huggingface_dataset"), dg.AssetKey("dpo_dataset")],
        instance=instance, resources=resources,
    )
    assert datasets.success

    text, kinds = _event_log_text(instance)
    # The scan saw what it is meant to see: materializations, check evaluations, the previews.
    assert kinds.get("ASSET_MATERIALIZATION", 0) >= 7 and kinds.get("ASSET_CHECK_EVALUATION", 0) >= 8, kinds
    assert KEPT_ID in text and REJECTED_ID in text, "the planted sessions are not in any preview"

    assert _hits(text, _home_bytes(Path(instance.root_directory)), PLANTED) == {}
    raw_md = daily.asset_materializations_for_node("raw_conversation_logs")[0].metadata
    raw_columns = [c.name for c in raw_md["preview"].schema.columns]
    assert "content_chars" in raw_columns and "has_order_state" in raw_columns and "content" not in raw_columns


def test_no_pii_check_fails_on_what_the_replacer_misses(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    missed = "010 - 5512 - 8830"  # spaces around the dashes: PII_PATTERN does not match it
    _plant(url, extra_user_text=f"동생 번호는 {missed}이에요.")
    result = dg.materialize([raw_conversation_logs, clean_sessions], partition_key=DAY, instance=instance,
                            resources=_resources(tmp_path, url), raise_on_error=False)
    [no_pii] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_pii"]
    assert not no_pii.passed
    hits = no_pii.metadata["hits_by_kind"].data
    assert hits.get("phone_number", 0) >= 1 and hits.get("long_digit_run", 0) >= 1, hits
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "cleaned_sessions" not in materialized and "rejected_sessions" in materialized
    assert not (tmp_path / "storage" / "cleaned_sessions" / f"{DAY}.parquet").exists()
    text, _ = _event_log_text(instance)
    assert _hits(text, _home_bytes(Path(instance.root_directory)), [*PLANTED, missed]) == {}
