"""benchmarks.results: the JSON / markdown records every benchmark writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import (
    RESULTS_DIR,
    is_lower_better,
    machine_description,
    median_time,
    print_table,
    write_results,
)

ROWS = [
    {"name": "popularity", "hr@10": 0.0912, "epoch_s": 1.5},
    {"name": "pinrec", "hr@10": np.float32(0.3125), "epoch_s": 12.25, "items_per_s": 150},
]
TARGETS = {"hr@10": 0.2853, "epoch_s": 10, "items_per_s": 100, "recall@100": 0.9}


def test_write_results_json_and_markdown(tmp_path: Path) -> None:
    json_path, md_path = write_results(
        "quality_test", ROWS, TARGETS, notes="seed 0", out_dir=tmp_path, machine="test box"
    )
    assert json_path == tmp_path / "quality_test.json"
    assert md_path == tmp_path / "quality_test.md"

    record = json.loads(json_path.read_text())
    assert list(record) == ["benchmark", "date", "machine", "rows", "targets", "notes"]
    assert record["benchmark"] == "quality_test"
    assert len(record["date"]) == 10 and record["date"][4] == "-"  # ISO date
    assert record["machine"] == "test box"
    assert record["rows"][1]["hr@10"] == pytest.approx(0.3125)  # numpy scalar -> number
    assert record["rows"][1]["items_per_s"] == 150
    assert record["targets"] == TARGETS
    assert record["notes"] == "seed 0"

    md = md_path.read_text()
    assert "| name | hr@10 | epoch_s | items_per_s |" in md
    assert "| popularity | 0.0912 | 1.5 |  |" in md
    assert "| pinrec | 0.3125 | 12.25 | 150 |" in md
    assert record["date"] in md and "test box" in md
    assert "| hr@10 | >= 0.2853 | popularity | 0.0912 | NO |" in md
    assert "| hr@10 | >= 0.2853 | pinrec | 0.3125 | yes |" in md
    assert "| epoch_s | <= 10 | popularity | 1.5 | yes |" in md
    assert "| epoch_s | <= 10 | pinrec | 12.25 | NO |" in md
    assert "| items_per_s | >= 100 | pinrec | 150 | yes |" in md
    assert "| recall@100 | >= 0.9 | - | - | not measured |" in md
    assert "seed 0" in md


def test_write_results_without_notes_and_overrides(tmp_path: Path) -> None:
    json_path, md_path = write_results(
        "x",
        [{"name": "a", "cost": 3}],
        {"cost": 5},
        out_dir=tmp_path / "sub",
        lower_is_better={"cost"},
        machine="m",
    )
    assert "notes" not in json.loads(json_path.read_text())
    assert "| cost | <= 5 | a | 3 | yes |" in md_path.read_text()
    with pytest.raises(ValueError):
        write_results("../escape", ROWS, {}, out_dir=tmp_path, machine="m")


def test_default_output_dir() -> None:
    assert RESULTS_DIR == Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_lower_is_better_heuristic() -> None:
    assert is_lower_better("p50_latency_ms")
    assert is_lower_better("epoch_s")
    assert not is_lower_better("items_per_s")
    assert not is_lower_better("hr@10")
    assert not is_lower_better("recall@100_vs_exact")


def test_print_table_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    text = print_table(ROWS)
    out = capsys.readouterr().out
    assert out.strip() == text
    lines = text.splitlines()
    assert lines[0].split() == ["name", "hr@10", "epoch_s", "items_per_s"]
    assert set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule are equally wide
    # Numeric columns are right-aligned: every value ends where its header ends.
    end = lines[0].index("hr@10") + len("hr@10")
    assert lines[2][:end].endswith("0.0912") and lines[3][:end].endswith("0.3125")


def test_median_time_and_machine() -> None:
    calls = []
    t = median_time(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= t < 1
    with pytest.raises(ValueError):
        median_time(lambda: None, repeats=0)
    desc = machine_description()
    assert "cores" in desc and "GiB RAM" in desc and "GPU: " in desc


def test_a_target_named_row_slash_metric_checks_that_row_only(tmp_path: Path) -> None:
    rows = [{"name": "c1", "p99_ms": 12.0}, {"name": "c8", "p99_ms": 40.0}, {"name": "c32", "p99_ms": 90.0}]
    _, md_path = write_results(
        "rows", rows, {"c1/p99_ms": 15, "c8/p99_ms": 50, "c64/p99_ms": 80}, out_dir=tmp_path, machine="m"
    )
    md = md_path.read_text()
    assert "| p99_ms | <= 15 | c1 | 12 | yes |" in md
    assert "| p99_ms | <= 50 | c8 | 40 | yes |" in md
    assert "| p99_ms | <= 80 | c64 | - | not measured |" in md
    assert "c32 | 90" not in md.split("## Targets")[1]  # no target names c32
