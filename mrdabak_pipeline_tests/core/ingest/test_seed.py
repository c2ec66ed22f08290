"""The seeder: deterministic, covers the menu and the scenarios, order_state true to the text."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.cli import main
from mrdabak_pipeline.core.domain import (
    DinnerType,
    ServingStyle,
    is_allowed_combination,
    normalize_order_state,
)
from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import (
    SCENARIOS,
    SEED_ID_PREFIX,
    count_seeded,
    generate,
    is_seeded,
    purge_seeded,
    ro,
    seed_database,
)

END = date(2026, 11, 20)


def test_same_seed_same_data_other_seed_other_data():
    a = generate(60, 5, 7, END, 0.2)
    b = generate(60, 5, 7, END, 0.2)
    c = generate(60, 5, 8, END, 0.2)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[0] != c[0]


def test_500_sessions_cover_every_dinner_style_and_scenario():
    sessions, messages, summary = generate(500, 30, 3, END, 0.0)
    assert set(summary.combos) == {(d.value, s.value) for d in DinnerType for s in ServingStyle}
    assert set(summary.scenarios) == set(SCENARIOS)
    # the confirmed orders themselves never break the CHAMPAGNE_FEAST rule
    finals: dict[str, dict] = {}
    for m in messages:
        if m["order_state"]:
            finals[m["session_id"]] = json.loads(m["order_state"])
    assert all(is_allowed_combination(s.get("dinnerType"), s.get("servingStyle")) for s in finals.values())
    confirmed_combos = {(s["dinnerType"], s["servingStyle"]) for s in finals.values() if s.get("servingStyle")}
    assert len(confirmed_combos) == 11  # all allowed combinations end up ordered
    days = {s["created_at"].date() for s in sessions}
    assert min(days) >= date(2026, 10, 22) and max(days) <= END


def test_every_assistant_row_has_a_valid_order_state_when_undamaged():
    _, messages, _ = generate(200, 5, 11, END, 0.0)
    for m in messages:
        if m["role"] == "ASSISTANT":
            state = normalize_order_state(m["order_state"])
            assert state is not None and "needsMoreInfo" in state
            missing = set(state["needsMoreInfo"])
            assert all((f in state) != (f in missing) for f in ("dinnerType", "servingStyle", "quantity"))
        else:
            assert m["order_state"] is None


def test_damage_rate_produces_each_kind():
    _, _, summary = generate(3000, 10, 2, END, 0.3)
    assert len(summary.damage) == 12
    assert 0.25 < sum(summary.damage.values()) / 3000 < 0.35


def test_delivery_fields_match_the_customers_words():
    _, messages, _ = generate(150, 5, 4, END, 0.0)
    for m in messages:
        if m["role"] == "ASSISTANT" and m["order_state"]:
            st_ = json.loads(m["order_state"])
            if "deliveryAddress" in st_:
                said = " ".join(x["content"] for x in messages if x["session_id"] == m["session_id"] and x["role"] == "USER")
                assert st_["deliveryAddress"] in said


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=12))
def test_particle_ro_always_attaches_one_particle(word):
    out = ro(word)
    assert out.startswith(word) and out[len(word):] in {"로", "으로"}


# --- Seeded rows never reach production unnoticed (issue 15 §4) --------------------------------

PROD_ID = "3f2b1c9e-8d7a-4e6f-9b1a-2c3d4e5f6a7b"  # what the production app writes: a bare UUID


def _production_row(engine) -> None:
    from sqlalchemy import insert

    from mrdabak_pipeline.core.ingest.db import create_schema, message_table, session_table

    create_schema(engine)
    now = datetime(2026, 11, 20, 12)
    with engine.begin() as conn:
        conn.execute(insert(session_table), [{"id": PROD_ID, "customer_id": 1, "customer_name": "고객", "status": "CONFIRMED", "created_at": now, "updated_at": now}])
        conn.execute(insert(message_table), [{"session_id": PROD_ID, "role": "USER", "content": "안녕하세요", "order_state": None, "created_at": now}])


def _ids(engine) -> tuple[set[str], set[str]]:
    from sqlalchemy import select

    from mrdabak_pipeline.core.ingest.db import message_table, session_table

    with engine.connect() as conn:
        return (
            set(conn.execute(select(session_table.c.id)).scalars()),
            set(conn.execute(select(message_table.c.session_id)).scalars()),
        )


def test_seed_refuses_a_non_sqlite_database_without_the_flag(capsys, monkeypatch) -> None:
    """MRDABAK_DB_URL may point at production: `mrdabak seed` must not write there by default
    (and must not even connect: port 1 would fail if it tried)."""
    monkeypatch.setenv("MRDABAK_DB_URL", "postgresql+psycopg2://app@127.0.0.1:1/production")
    assert main(["seed", "--sessions", "5"]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "--allow-non-sqlite" in err
    assert main(["seed", "--sessions", "5", "--db-url", "mysql+pymysql://app@127.0.0.1:1/prod"]) == 2


def test_seeded_sessions_are_marked_and_purged(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    engine = make_engine(url)
    _production_row(engine)
    assert main(["seed", "--db-url", url, "--sessions", "120", "--days", "2", "--end-date", "2026-11-20", "--damage-rate", "0.3"]) == 0
    sessions, message_sessions = _ids(engine)
    seeded = {s for s in sessions | message_sessions if s != PROD_ID}
    assert len(seeded) >= 110 and all(is_seeded(s) and s.startswith(SEED_ID_PREFIX) for s in seeded)
    assert not is_seeded(PROD_ID)
    assert count_seeded(engine)[0] == len(sessions) - 1
    assert main(["seed", "--db-url", url, "--purge"]) == 0
    assert "removed" in capsys.readouterr().out
    assert _ids(engine) == ({PROD_ID}, {PROD_ID})  # orphan seeded messages gone too; production kept
    assert count_seeded(engine) == (0, 0)
    assert main(["seed", "--db-url", url, "--purge"]) == 0  # idempotent


def test_purge_on_a_database_without_tables(tmp_path) -> None:
    assert purge_seeded(make_engine(f"sqlite:///{tmp_path / 'empty.db'}")) == (0, 0)


@pytest.mark.postgres
def test_postgres_needs_the_flag_and_purge_removes_only_seeded_rows(pg_url) -> None:
    engine = make_engine(pg_url)
    _production_row(engine)
    assert main(["seed", "--db-url", pg_url, "--sessions", "40", "--end-date", "2026-11-20"]) == 2
    assert _ids(engine) == ({PROD_ID}, {PROD_ID})  # nothing written
    assert main(["seed", "--db-url", pg_url, "--allow-non-sqlite", "--sessions", "40", "--end-date", "2026-11-20", "--damage-rate", "0.3"]) == 0
    assert count_seeded(engine)[0] >= 35
    assert main(["seed", "--db-url", pg_url, "--purge"]) == 0
    assert _ids(engine) == ({PROD_ID}, {PROD_ID})
    engine.dispose()


def test_demo_sized_seeding_is_fast(tmp_path) -> None:
    """`make demo` seeds 250 sessions; that must stay well under 10 s."""
    import time as clock

    start = clock.perf_counter()
    seed_database(make_engine(f"sqlite:///{tmp_path / 'demo.db'}"), sessions=250, days=14, seed=42, end_date=END)
    assert clock.perf_counter() - start < 10


def test_the_same_seed_gives_the_same_data_in_every_process() -> None:
    """Reproducible across processes: nothing may depend on set order (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    code = (
        "from datetime import date; import hashlib; from mrdabak_pipeline.core.ingest.seed import generate;"
        "s, m, _ = generate(300, 7, 42, date(2026, 11, 30), 0.05);"
        "print(hashlib.sha256(repr([(x['session_id'], x['content'], x['order_state']) for x in m]).encode()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)},
                       capture_output=True, text=True, check=True).stdout
        for h in (1, 2, 3)
    }
    assert len(digests) == 1


def _by_session(messages: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in messages:
        out.setdefault(m["session_id"], []).append(m)
    return out


def test_many_customers_open_with_the_order_and_some_without_a_hello():
    """A model that only ever saw "hello" first learns to greet by rote whatever the customer says."""
    from mrdabak_pipeline.core.ingest.seed import GREETINGS

    _, messages, _ = generate(400, 5, 12, END, 0.0)
    firsts = [next(m for m in ms if m["role"] == "USER") for ms in _by_session(messages).values()]
    replies = [next(m for m in ms if m["role"] == "ASSISTANT") for ms in _by_session(messages).values()]
    with_order = [json.loads(r["order_state"]).get("dinnerType") is not None for r in replies]
    assert 0.3 < sum(with_order) / len(replies) < 0.7
    bare = [f for f, w in zip(firsts, with_order, strict=True) if w and not f["content"].startswith(GREETINGS)]
    assert len(bare) > 0.3 * sum(with_order)
    # an opening that carries the order is answered with the order, never with the rote greeting
    assert all("님!" not in r["content"] for r, w in zip(replies, with_order, strict=True) if w)


def test_an_out_of_domain_aside_mid_order_keeps_the_order_state():
    from mrdabak_pipeline.core.ingest.seed import DECLINE, OUT_OF_DOMAIN

    _, messages, _ = generate(600, 5, 13, END, 0.0)
    asides = 0
    for ms in _by_session(messages).values():
        for i, m in enumerate(ms):
            if m["role"] == "USER" and m["content"] in OUT_OF_DOMAIN and i > 2:
                before = next(x for x in reversed(ms[:i]) if x["role"] == "ASSISTANT")
                reply = ms[i + 1]
                assert reply["content"].startswith(DECLINE)
                keep = ("dinnerType", "servingStyle", "quantity", "deliveryDate", "deliveryTime", "deliveryAddress")
                b, r = json.loads(before["order_state"]), json.loads(reply["order_state"])
                assert {k: b.get(k) for k in keep} == {k: r.get(k) for k in keep}
                asides += 1
    assert asides >= 5
