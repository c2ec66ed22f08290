"""The test tiers: conftest.py puts every test in exactly one, and `-m unit` stays inside core/.

Run against a throwaway test tree with the project's own conftest, so a rule that stops holding
(a test in no tier or two, a unit test outside core/) fails here rather than silently moving tests
out of `make test-unit`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent


@pytest.fixture
def tree(pytester: pytest.Pytester) -> pytest.Pytester:
    """A tests folder shaped like ours: the real conftest and markers, tests in core/, defs/ and at the top."""
    markers = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n" + "".join(f"    {m}\n" for m in markers))
    pytester.makeconftest((HERE / "conftest.py").read_text())
    pytester.mkpydir("core")
    pytester.mkpydir("defs")
    (pytester.path / "core" / "test_pure.py").write_text(
        "import pytest\n"
        "def test_plain(): pass\n"
        "@pytest.mark.integration\ndef test_with_a_server(): pass\n"
        "@pytest.mark.slow\ndef test_old_slow(): pass\n"
        "@pytest.mark.postgres\ndef test_on_postgres(): pass\n"
    )
    (pytester.path / "defs" / "test_assets.py").write_text("def test_materialize(): pass\n")
    (pytester.path / "test_end_to_end.py").write_text("def test_chain(): pass\n")
    (pytester.path / "test_cli_x.py").write_text("def test_cli(): pass\n")
    return pytester


def _selected(tree: pytest.Pytester, expr: str) -> set[str]:
    result = tree.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", "-m", expr)
    return {line.split("::")[-1] for line in result.outlines if "::" in line}


def test_every_test_lands_in_exactly_one_tier(tree: pytest.Pytester) -> None:
    tiers = {expr: _selected(tree, expr) for expr in ("unit", "integration", "e2e")}
    assert tiers == {
        "unit": {"test_plain"},
        "integration": {"test_with_a_server", "test_on_postgres", "test_materialize", "test_cli"},
        "e2e": {"test_old_slow", "test_chain"},
    }
    assert _selected(tree, "not (unit or integration or e2e)") == set()


def test_unit_runs_do_not_import_modules_outside_core(tree: pytest.Pytester) -> None:
    (tree.path / "defs" / "test_broken.py").write_text("raise ImportError('a defs module that does not import')\n")
    assert tree.runpytest("-p", "no:cacheprovider", "-m", "unit").ret == 0
    assert tree.runpytest("-p", "no:cacheprovider", "-m", "integration").ret != 0  # it is collected there


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("core/test_two.py", "import pytest\n@pytest.mark.unit\n@pytest.mark.e2e\ndef test_both(): pass\n"),
        ("defs/test_misfiled.py", "import pytest\n@pytest.mark.unit\ndef test_unit_outside_core(): pass\n"),
    ],
)
def test_two_tiers_or_a_unit_test_outside_core_stop_the_run(tree: pytest.Pytester, path: str, source: str) -> None:
    (tree.path / path).write_text(source)
    result = tree.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
