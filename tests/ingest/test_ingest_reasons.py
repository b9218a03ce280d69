"""Vectorized validation quarantines what the per-row implementation did: the same rows, the
same reasons, the same original values, the same good rows, on a fixed corpus of 150 inputs (the
bad-input matrix, and 120 random mixes of its broken values and others as object frames and as
all-text frames). The expected outputs are digests computed by the per-row implementation (before
issue 19, commit 0444215), in tests/data/ingest_reasons_before_vectorizing.json.

Each row's reasons are compared as a set: their order is the schema's now, where pandera's
failure cases came back in an unstable sort's order when an input had more than 16 of them.
"""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from events.ingest import validate_events
from tests.ingest.test_ingest import BAD_INPUT, DAY, ROW_PATCHES, _frame, _good_row

EXPECTED = Path(__file__).parents[1] / "data" / "ingest_reasons_before_vectorizing.json"

EXTRA = [
    {"user_id": 2**63},
    {"user_id": -(2**63)},
    {"user_id": 1.0},
    {"user_id": 2.5},
    {"user_id": float("nan")},
    {"user_id": " 42 "},
    {"user_id": "+7"},
    {"user_id": "1e3"},
    {"user_id": "1_000"},
    {"user_id": "inf"},
    {"item_id": np.int64(5)},
    {"item_id": np.float64(3.0)},
    {"item_id": b"12"},
    {"item_id": [1]},
    {"surface": b"search"},
    {"surface": "Search"},
    {"surface": ""},
    {"outcome": 3.5},
    {"outcome": float("nan")},
    {"event_ts": "2026-01-05T10:00:00Z"},
    {"event_ts": "2026-01-05 10:00:00+01:00"},
    {"event_ts": " 2026-01-05T10:00:00+00:00 "},
    {"event_ts": "2026-01-05T10:00:00.123456789+00:00"},
    {"event_ts": "2026-01-05T23:30:00-01:00"},
    {"event_ts": "2026-01-05"},
    {"event_ts": "2026-01-05T10:00:00+0000"},
    {"event_ts": 1767607200},
    {"event_ts": pd.Timestamp("2026-01-05T10:00:00", tz="UTC")},
    {"event_ts": pd.Timestamp("2026-01-05T10:00:00")},
    {"event_ts": "2026-01-05T10:00:00+05:30"},
    {"event_ts": "Jan 5 2026 10:00 +00:00"},
    {"event_ts": "2262-04-12T00:00:00+00:00"},
    {"session_id": "abc"},
    {"query_id": 2**53},
    {"query_id": "5"},
    {"query_id": True},
]
PATCHES = [p for p, _ in ROW_PATCHES.values()] + EXTRA


def _as_text(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def corpus(tmp: Path):
    """(name, raw input) of every case, always the same."""
    for kind, case in BAD_INPUT.items():
        folder = tmp / kind
        folder.mkdir()
        yield f"matrix-{kind}", case.read(folder)
    rng = random.Random(0)
    for n in range(60):
        rows = []
        for _ in range(rng.randint(1, 40)):
            row = _good_row(rng.randint(0, 20))
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                row.update(rng.choice(PATCHES))
            rows.append(row)
        if rng.random() < 0.3:
            rows += [dict(r) for r in rng.sample(rows, min(3, len(rows)))]
        df = _frame(rows)
        if rng.random() < 0.2:
            df = df.drop(columns=[rng.choice(list(df.columns))])
        if rng.random() < 0.1:
            df = df.assign(extra=1)
        yield f"random-{n}", df
        yield f"random-text-{n}", df.map(_as_text)


def digest(result) -> str:
    """What a validation produced, as one hash: good rows, and per quarantined row its input row,
    its set of reasons and its original values."""
    quarantine = [
        [int(r), sorted(reason.split("; ")), raw]
        for r, reason, raw in zip(result.quarantine["input_row"], result.quarantine["reason"], result.quarantine["raw"])
    ]
    body = json.dumps([result.input_rows, result.good.to_csv(index=False), quarantine], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def test_vectorized_validation_quarantines_what_the_per_row_implementation_did(tmp_path):
    expected = json.loads(EXPECTED.read_text())
    got = {name: digest(validate_events(raw, DAY)) for name, raw in corpus(tmp_path)}
    assert len(got) == len(expected) == 150
    differ = sorted(name for name in expected if got[name] != expected[name])
    assert differ == [], f"cases that changed: {differ}"


@pytest.mark.parametrize("name", ["random-3", "random-text-3"])
def test_a_row_failing_several_checks_lists_them_in_schema_order(tmp_path, name):
    raw = dict(corpus(tmp_path))[name]
    order = ["missing column", "unexpected column"]
    for reasons in validate_events(raw, DAY).quarantine["reason"]:
        parts = reasons.split("; ")
        kinds = [p for p in parts if any(o in p for o in order)]
        assert parts[: len(kinds)] == kinds  # column problems first, the outside-partition last
        assert all("outside partition" not in p for p in parts[:-1])
