"""Checks that guard data in the libraries are real checks: no bare `assert` (removed by
`python -O`) in events/, feature_pipeline/, training/, serving/, storage/, monitoring/ or
devstack/, and the checks that replaced them still refuse bad input under `python -O`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services  # starts processes of its own

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("events", "feature_pipeline", "training", "serving", "storage", "monitoring", "devstack")


def test_no_library_module_guards_anything_with_a_bare_assert():
    found = []
    for package in LIBRARIES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Assert):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], f"bare asserts vanish under python -O: {found}"


OPTIMIZED_CASES = {
    "sequence-longer-than-max_len": (
        "from tests.helpers import tiny_model; import torch; m = tiny_model(); "
        "x = torch.ones(1, m.cfg.max_len + 5, dtype=torch.long); m.encode(x, x, x * 0, x * 0, x * 0.0)",
        "max_len",
    ),
    "heads-do-not-divide-d_model": (
        "from training.model import PinRec, PinRecConfig; PinRec(PinRecConfig(n_items=10, d_model=30, n_heads=4))",
        "n_heads",
    ),
    "hash-tables-without-buckets": (
        "from training.model import PinRec, PinRecConfig; "
        "PinRec(PinRecConfig(n_items=10, d_model=8, n_heads=2, hash_tables=2, hash_buckets=1))",
        "hash_buckets",
    ),
}


@pytest.mark.parametrize("case", OPTIMIZED_CASES, ids=list(OPTIMIZED_CASES))
def test_guards_refuse_bad_input_under_python_O(case):
    code, reason = OPTIMIZED_CASES[case]
    proc = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, f"{case}: accepted under -O"
    assert "ValueError" in proc.stderr and reason in proc.stderr, proc.stderr[-1500:]


def test_row_conservation_is_a_real_check():
    """The ingest guard the Dagster asset calls (it was a bare assert there)."""
    from events.ingest import RowsLostError, check_rows_conserved

    check_rows_conserved(10, 7, 3, "2026-02-01")
    with pytest.raises(RowsLostError, match="2026-02-01: 10 rows in, but 7 good \\+ 2 quarantined"):
        check_rows_conserved(10, 7, 2, "2026-02-01")
