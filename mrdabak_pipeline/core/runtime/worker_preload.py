"""Imported once by the forkserver of `core.parallel`, so every worker forked from it starts warm.

Without it each worker would import the stages again and build its own copies of what they load
lazily: the token vocabulary (seconds: the bundled o200k data is rebuilt into a tiktoken encoding
and checked against quicktok) the Faker ko_KR pools, and pandas (which Arrow's ``to_numpy`` imports). Forked workers share these pages.
A failure here only costs that warm start: the forkserver must come up regardless.
"""

from mrdabak_pipeline.core import chat_lines, pii, stages, validation  # noqa: F401 - imported to be inherited
from mrdabak_pipeline.core.datasets.tokens import resolve_encoding, token_counter


def _warm() -> None:
    try:
        import pandas  # noqa: F401 - Arrow's to_numpy imports it on first use: once here, not per worker

        token_counter(resolve_encoding(validation.DEFAULT_MODEL).encoding)
        pii.fake_pools()
    except Exception:  # noqa: BLE001, S110 - a worker loads them itself on first use instead
        pass


_warm()
