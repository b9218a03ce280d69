"""The canary gate's rules, on hand-made metric sets."""

from serving.canary import GatePolicy, gate

CHAMPION = {"recall@100": 0.30, "recall@100/click": 0.28, "recall@100/save": 0.33, "latency_p50_ms": 10.0,
            "latency_p99_ms": 30.0}


def test_first_candidate_needs_only_the_floors():
    assert gate({"recall@100": 0.05, "latency_p50_ms": 9.0, "latency_p99_ms": 40.0}, None) == (True, [])
    passed, reasons = gate({"recall@100": 0.01, "latency_p99_ms": 40.0}, None)
    assert not passed and reasons == ["recall@100 = 0.0100 is below the floor 0.0200"]


def test_a_drop_within_tolerance_passes_and_beyond_it_fails():
    within = {**CHAMPION, "recall@100/save": 0.33 * 0.96}
    assert gate(within, CHAMPION, GatePolicy(tolerance=0.05))[0]
    worse = {**CHAMPION, "recall@100/save": 0.33 * 0.90}
    passed, reasons = gate(worse, CHAMPION, GatePolicy(tolerance=0.05))
    assert not passed and len(reasons) == 1 and reasons[0].startswith("recall@100/save")


def test_latency_is_judged_against_the_champion_and_an_absolute_cap():
    slow = {**CHAMPION, "latency_p50_ms": 16.0}
    passed, reasons = gate(slow, CHAMPION, GatePolicy(max_latency_ratio=1.5))
    assert not passed and "1.60x the champion" in reasons[0]
    capped = {**CHAMPION, "latency_p99_ms": 2500.0}
    assert not gate(capped, CHAMPION)[0]


def test_a_nan_metric_never_passes():
    passed, reasons = gate({**CHAMPION, "recall@100": float("nan")}, CHAMPION)
    assert not passed and len(reasons) == 2  # below the floor, and worse than the champion
