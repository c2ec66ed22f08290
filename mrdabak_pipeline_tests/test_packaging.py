"""The built wheel carries what the code reads at run time (the golden set), not just the .py files.

Why a real build: an editable install reads the source tree, so every other test would pass even
if the package data were missing from the wheel a container image is built from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN_IN_WHEEL = "mrdabak_pipeline/golden/golden.jsonl"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the working tree.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "mrdabak_pipeline", src / "mrdabak_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("mrdabak_pipeline-*.whl")
    return whl


def test_wheel_ships_the_golden_set(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert GOLDEN_IN_WHEEL in names
        assert zf.read(GOLDEN_IN_WHEEL) == (REPO / GOLDEN_IN_WHEEL).read_bytes()


def test_non_editable_install_finds_the_golden_set_without_a_source_tree(wheel: Path, tmp_path: Path) -> None:
    """Unpacked like site-packages and imported from elsewhere: the default golden path is inside it."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    code = (
        "import mrdabak_pipeline, mrdabak_pipeline.core.datasets.chat_format as cf; "
        "print(mrdabak_pipeline.__file__); print(cf.GOLDEN_PATH); print(cf.GOLDEN_PATH.stat().st_size)"
    )
    # PYTHONPATH comes before the editable install's finder, so the unpacked wheel is what loads.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    module_file, golden, size = proc.stdout.split()
    assert Path(module_file).is_relative_to(target)
    assert Path(golden) == target / GOLDEN_IN_WHEEL and int(size) > 0
