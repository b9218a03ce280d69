"""Console text written to logs and pipes: without the colour codes a terminal would interpret."""

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (colours, cursor moves)."""
    return ANSI_ESCAPE.sub("", text)
