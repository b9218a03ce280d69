"""What the operator's commands print: their own lines, readable in a terminal and in a log file.

By default (`quiet`): library banners and advertisements are off (Lightning's "GPU available",
"TPU available", its tips), Dagster's console log of each run is off (the day's line says its
verdict or first error; the run's full log is in the UI), training's per-epoch lines (logger
`training.train`, INFO) and Feast's materialization chatter (logger `feature_pipeline.store`, DEBUG)
are not shown, and no ANSI escape is written unless the output is a terminal. In a terminal, training shows its
progress bar. `--verbose` (PINREC_VERBOSE=1) restores the full logs.
"""

from __future__ import annotations

import io
import logging
import os
import sys

from storage.console import strip_ansi

VERBOSE_VARIABLE = "PINREC_VERBOSE"
# a run's Dagster console log: off (the day's line carries the verdict or the first error line; the
# run's full log is in the UI, or on the console with --verbose)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# the loggers whose INFO lines are banners and tips rather than the operator's business
NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.utilities.seed",
)


def verbose() -> bool:
    return os.environ.get(VERBOSE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


class _PlainText(io.TextIOBase):
    """A text stream that writes through to `stream` without ANSI escapes."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(strip_ansi(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")


def configure(verbose_flag: bool) -> None:
    """Set up this process's output for an operator's command (module docstring)."""
    if verbose_flag:
        os.environ[VERBOSE_VARIABLE] = "1"
    if verbose():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("feature_pipeline.store").setLevel(logging.DEBUG)
        logging.getLogger("training.train").setLevel(logging.INFO)
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not stream.isatty() and not isinstance(stream, _PlainText):
            setattr(sys, name, _PlainText(stream))


def run_config() -> dict:
    """The run config of the commands' runs: no Dagster console log, unless --verbose (every line)."""
    return {} if verbose() else QUIET_LOGS
