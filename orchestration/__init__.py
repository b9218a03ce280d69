"""The code location and how it is run: Dagster definitions (`definitions.py`: the assets of
`assets/` with this package's jobs, schedules, sensors and executor from `defs/`), runs of its
jobs in this process (`runs.py`), the `pinrec-ops` CLI (`cli.py`) and the closed-loop live runner
(`live.py`). Imports `assets`; nothing below imports this package."""
