"""The code location: every module of `pinrec_ops/defs/` loaded the way Dagster loads a project's
defs folder (`[tool.dg.project]` in pyproject.toml); the shared resources and the executor are
`@definitions` in `defs/resources.py` and `defs/executor.py`."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
