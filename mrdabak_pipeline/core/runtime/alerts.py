"""Run-failure alerts: a short, secret-free message and an optional JSON webhook.

Failure messages quote exceptions, and exceptions quote connection URLs and request headers. A
password or API key must never reach a log or a chat channel, so every alert passes through
`redact` first: credentials inside URLs and the values of secret-looking environment variables are
masked.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Mapping
from typing import Any

ALERT_WEBHOOK_ENV = "MRDABAK_ALERT_WEBHOOK_URL"
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|DB_URL|WEBHOOK)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+(:[^/\s@]*)?@")
_MASK = "***"
_MAX_ERROR_CHARS = 2000


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Mask ``user:password@`` in URLs and any value of an env var whose name looks secret."""
    env = os.environ if environ is None else environ
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{_MASK}@", text)
    # Longest first, so a secret that contains another secret is masked whole.
    secrets = sorted({v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)
    for value in secrets:
        out = out.replace(value, _MASK)
    return out


def failure_alert(
    job_name: str, run_id: str, error: str | None, partition: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The alert as plain data: what failed, where to look, and the (redacted, truncated) error."""
    message = redact((error or "no error message").strip(), environ)
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + " …"
    where = f" partition {partition}" if partition else ""
    return {
        "text": f"mrdabak: run {run_id[:8]} of {job_name}{where} failed: {message.splitlines()[0] if message else ''}",
        "job": job_name,
        "run_id": run_id,
        "partition": partition,
        "error": message,
    }


def post_webhook(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> int:
    """POST `payload` as JSON (Slack-/Teams-style incoming webhooks read the ``text`` field).

    Returns the HTTP status; network errors propagate so the caller can log them, without the URL.
    """
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator-provided URL
        return int(response.status)
