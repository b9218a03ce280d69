"""The code location: Definitions merged from each area, plus the shared resources."""

import dagster as dg

from orchestration.areas import data, lifecycle
from orchestration.resources import build_resources

defs = dg.Definitions.merge(data.defs, lifecycle.defs, dg.Definitions(resources=build_resources()))
