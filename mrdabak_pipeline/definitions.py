"""The code location's `Definitions`: everything under `mrdabak_pipeline/defs/`, loaded by Dagster.

One folder per pipeline stage (ingestion, preparation, datasets, training, evaluation) plus
automation; each holds its assets, checks and the resources only it needs, and
`defs/resources.py` the shared ones. `dg.load_from_defs_folder` finds them (the project is
declared in ``[tool.dg]`` of pyproject.toml), so adding an asset is adding it to its stage's
folder — there is no list to keep in sync here.
"""

from pathlib import Path

import dagster as dg

PACKAGE_DIR = Path(__file__).parent


def build_definitions() -> dg.Definitions:
    """A fresh `Definitions` (tests build their own; the code location uses `defs`)."""
    return dg.load_from_defs_folder(path_within_project=PACKAGE_DIR)


defs = build_definitions()
