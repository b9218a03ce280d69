"""Record benchmark results in the design's format; every benchmark uses this module.

Each benchmark prints a table (``print_table``) and writes ``benchmarks/results/<name>.json`` and
``<name>.md`` (``write_results``)::

    {"benchmark": "<name>", "date": "<ISO date>", "machine": "<cores, RAM, CPU model, GPU>",
     "rows": [{"name": "<row name>", "<metric>": <number>, ...}],
     "targets": {"<metric>": <number>}, "notes": "<optional>"}

A target is met when a row's value is ``>=`` the target, or ``<=`` for lower-is-better metrics:
those named in ``lower_is_better``, or by default any metric whose name says it is a time, a
latency or a size (see ``is_lower_better``). A target named ``"<row>/<metric>"`` applies to that
row only (e.g. ``"service-c1/p99_ms": 15`` beside ``"service-c8/p99_ms": 50``); a plain metric
name applies to every row holding the metric. Timings are medians of several runs
(``median_time``).
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from storage.files import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOWER_BETTER_RE = re.compile(
    r"(latency|time|seconds|duration|_s$|_ms$|_us$|_bytes$|_mb$|_mib$|_gb$|_gib$|memory|rss)",
    re.IGNORECASE,
)
# Rates and quality metrics stay higher-is-better even when they end in a unit ("items_per_s").
_HIGHER_BETTER_RE = re.compile(r"(per_|/s|qps|throughput|speedup|recall|hr@|ndcg|coverage|accuracy)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Machine and timing
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_gib() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024**2  # whole GiB, as `free -g` prints
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "none"
    try:
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(names)
    except Exception:  # a broken driver must not break result writing
        pass
    return "none"


def machine_description() -> str:
    """E.g. ``"2 cores, 23 GiB RAM, Intel(R) Xeon(R) Processor, GPU: none"``."""
    ram = _ram_gib()
    ram_txt = f"{ram} GiB RAM" if ram is not None else "RAM unknown"
    return f"{_cores()} cores, {ram_txt}, {_cpu_model()}, GPU: {_gpu()}"


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # numpy / torch scalars
        except (ValueError, TypeError):
            pass
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.4g}"
    return str(value)


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(key, None)
    names = list(cols)
    if "name" in cols:
        names.remove("name")
        names.insert(0, "name")
    return names


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned plain-text table of ``rows`` (columns: union of keys, ``name`` first)."""
    if not rows:
        return "(no rows)"
    cols = _columns(rows)
    cells = [[_fmt(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    numeric = [
        all(
            row.get(c) is None or (isinstance(row.get(c), numbers.Number) and not isinstance(row.get(c), bool))
            for row in rows
        )
        for c in cols
    ]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def print_table(rows: Sequence[Mapping[str, Any]], file: TextIO | None = None) -> str:
    """Print ``format_table(rows)`` to stdout (or ``file``) and return it."""
    text = format_table(rows)
    print(text, file=file if file is not None else sys.stdout, flush=True)
    return text


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """GitHub markdown table of ``rows`` (columns: union of keys, ``name`` first)."""
    if not rows:
        return "_no rows_"
    cols = _columns(rows)
    out = [
        "| " + " | ".join(_md_escape(c) for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        out.append("| " + " | ".join(_md_escape(_fmt(row.get(c))) for c in cols) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def is_lower_better(metric: str, lower_is_better: Collection[str] | None = None) -> bool:
    """Explicit list if given, else the name heuristic: times, latencies, ``*_s``, ``*_ms`` and
    sizes are lower-is-better, unless the name is a rate or quality (``per_``, ``qps``,
    ``throughput``, ``speedup``, ``recall``, ``hr@``, ``ndcg``, ``coverage``)."""
    if lower_is_better is not None:
        return metric in lower_is_better
    if _HIGHER_BETTER_RE.search(metric):
        return False
    return bool(_LOWER_BETTER_RE.search(metric))


def target_checks(
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, Any],
    lower_is_better: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """One check per (target metric, row holding that metric); a metric no row holds gets one
    check with ``row=None`` and ``met=None`` (not measured)."""
    checks: list[dict[str, Any]] = []
    for key, target in targets.items():
        only_row, _, metric = key.rpartition("/")
        lower = is_lower_better(metric, lower_is_better)
        found = False
        for i, row in enumerate(rows):
            if metric not in row or (only_row and row.get("name") != only_row):
                continue
            found = True
            value = row[metric]
            try:
                v, t = float(value), float(target)
                met = (v <= t) if lower else (v >= t)
                met = met and not math.isnan(v)
            except (TypeError, ValueError):
                met = False
            checks.append(
                {
                    "metric": metric,
                    "target": target,
                    "direction": "<=" if lower else ">=",
                    "row": row.get("name", f"row {i}"),
                    "value": value,
                    "met": bool(met),
                }
            )
        if not found:
            checks.append(
                {
                    "metric": metric,
                    "target": target,
                    "direction": "<=" if lower else ">=",
                    "row": only_row or None,
                    "value": None,
                    "met": None,
                }
            )
    return checks


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def render_markdown(record: Mapping[str, Any], lower_is_better: Collection[str] | None = None) -> str:
    """The ``<name>.md`` text for a results record (the JSON object)."""
    rows = list(record["rows"])
    targets = dict(record.get("targets") or {})
    parts = [
        f"# Benchmark: {record['benchmark']}",
        "",
        f"- Date: {record['date']}",
        f"- Machine: {record['machine']}",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        "## Targets",
        "",
    ]
    if targets:
        check_rows = [
            {
                "metric": c["metric"],
                "target": f"{c['direction']} {_fmt(c['target'])}",
                "row": c["row"] if c["row"] is not None else "-",
                "value": _fmt(c["value"]) if c["value"] is not None else "-",
                "met": "not measured" if c["met"] is None else ("yes" if c["met"] else "NO"),
            }
            for c in target_checks(rows, targets, lower_is_better)
        ]
        parts.append(markdown_table(check_rows))
    else:
        parts.append("_no targets_")
    if record.get("notes"):
        parts += ["", "## Notes", "", str(record["notes"])]
    return "\n".join(parts) + "\n"


def write_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, Any],
    notes: str = "",
    *,
    out_dir: str | os.PathLike[str] | None = None,
    lower_is_better: Collection[str] | None = None,
    machine: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<name>.md``; return ``(json_path, md_path)``.

    ``out_dir`` defaults to ``benchmarks/results``. ``rows`` are dicts, each normally with a
    ``name`` key and one number per metric; ``targets`` maps metric -> number. ``notes`` is
    stored (and rendered) only when non-empty. ``lower_is_better`` overrides the metric-name
    heuristic for the met/not-met column; ``machine`` overrides ``machine_description()``.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"benchmark name must be a plain file name, got {name!r}")
    rows = [dict(r) for r in rows]
    record: dict[str, Any] = {
        "benchmark": name,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine if machine is not None else machine_description(),
        "rows": rows,
        "targets": dict(targets),
    }
    if notes:
        record["notes"] = notes
    # Round-trip through JSON so numpy / torch scalars become plain numbers in both files.
    record = json.loads(json.dumps(record, default=_json_default))

    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    atomic_write_text(md_path, render_markdown(record, lower_is_better))
    return json_path, md_path


def argument_parser(module_file: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of a benchmark module: `python -m benchmarks.<name>`, its docstring as the
    help text (kept as written)."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{Path(module_file).stem}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
