"""Failure alerts never carry secrets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mrdabak_pipeline.core.runtime.alerts import failure_alert, redact

secret_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", min_size=1, max_size=30)


@given(user=secret_chars, password=secret_chars)
def test_url_credentials_are_masked(user: str, password: str) -> None:
    text = f"could not connect: postgresql+psycopg2://{user}:{password}@db.example:5432/app (timeout)"
    out = redact(text, environ={})
    assert out == "could not connect: postgresql+psycopg2://***@db.example:5432/app (timeout)"


def test_secret_env_values_are_masked_but_ordinary_ones_kept() -> None:
    env = {"OPENAI_API_KEY": "sk-test-abcdef123456", "HOME": "/root", "MRDABAK_DB_URL": "sqlite:///x.db"}
    out = redact("key sk-test-abcdef123456 in /root using sqlite:///x.db", environ=env)
    assert out == "key *** in /root using ***"


def test_failure_alert_is_short_and_redacted() -> None:
    env = {"AZURE_OPENAI_API_KEY": "azure-secret-999"}
    alert = failure_alert("train_evaluate_promote_job", "0123456789abcdef", "boom azure-secret-999\n" + "x" * 5000, "2025-03-09", env)
    assert alert["text"] == "mrdabak: run 01234567 of train_evaluate_promote_job partition 2025-03-09 failed: boom ***"
    assert "azure-secret-999" not in str(alert)
    assert len(alert["error"]) < 2100
    assert failure_alert("j", "r", None, environ={})["error"] == "no error message"
