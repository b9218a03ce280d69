"""The code location: Definitions merged from each area, plus the shared resources and the
executor PINREC_EXECUTOR selects (orchestration.executor; Dagster's default when unset)."""

import dagster as dg

from orchestration.areas import data, lifecycle
from orchestration.executor import select_executor
from orchestration.resources import build_resources

defs = dg.Definitions.merge(
    data.defs, lifecycle.defs, dg.Definitions(resources=build_resources(), executor=select_executor())
)
