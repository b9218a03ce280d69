"""The graph is a function of the settings: two settings make two graphs in one process without
touching the environment, importing the modules of the graph reads no setting, and the code
location that Dagster loads is the graph of the settings of its environment."""

import os
import subprocess
import sys
from datetime import date

import dagster as dg

from assets.config import load_settings
from orchestration.definitions import build_definitions
from storage.paths import REPO_ROOT

STEPS = ("finetuned_model", "candidate_version", "canary_evaluation", "champion")
TRIAL_STEPS = ("canary_release", "canary_trial")


def _keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def _checks(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for c in defs.asset_checks for k in c.check_keys}


def _job_assets(defs: dg.Definitions, job: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def _check_default(defs: dg.Definitions, check_key: str, field: str):
    [checks] = [c for c in defs.asset_checks if check_key in {k.to_user_string() for k in c.check_keys}]
    return checks.node_def.config_schema.as_field().default_value[field]


def test_two_settings_build_two_graphs_in_one_process_without_the_environment():
    environment = dict(os.environ)
    one = load_settings({"PINREC_SURFACES": "homefeed", "PINREC_START_DATE": "2026-01-03"})
    every = load_settings({"PINREC_MAX_BAD_FRACTION": "0.05", "PINREC_GATE_BASELINES": "0"})
    online = load_settings({"PINREC_SURFACES": "homefeed,search", "PINREC_ONLINE_CANARY": "1"})
    graphs = {name: build_definitions(s) for name, s in (("one", one), ("every", every), ("online", online))}
    assert os.environ == environment

    data = {"events", "event_quarantine", "serving_log", "online_features", "online_metrics", "pretrained_model"}
    assert (
        _keys(graphs["one"]) - data
        == {f"homefeed/{step}" for step in STEPS}
        | {
            "user_sequence_features",
            "item_stats_features",
            "item_surface_stats_features",
        }
        - data
    )
    assert {k.split("/")[0] for k in _keys(graphs["every"]) if "/" in k} == {"homefeed", "search", "related"}
    assert {f"{s}/{step}" for s in ("homefeed", "search") for step in STEPS + TRIAL_STEPS} <= _keys(graphs["online"])
    assert not any(k.startswith("related/") for k in _keys(graphs["online"]))
    assert not any(step in k for k in _keys(graphs["every"]) for step in TRIAL_STEPS)

    assert "homefeed/canary_trial:online_canary_gate" in _checks(graphs["online"])
    assert not any("online_canary_gate" in c for c in _checks(graphs["every"]))
    assert {"homefeed/champion:freshness_check", "related/champion:freshness_check"} <= _checks(graphs["every"])
    assert "related/champion:freshness_check" not in _checks(graphs["one"])
    # in the online canary mode a retrain ends at the release of the next canary
    retrain = _job_assets(graphs["online"], "retrain")
    assert "homefeed/canary_release" in retrain and not {"homefeed/canary_trial", "homefeed/champion"} & retrain
    assert {"homefeed/champion", "related/champion"} <= _job_assets(graphs["every"], "retrain")

    # the checks' defaults and the partitions are the settings' own
    assert _check_default(graphs["every"], "events:bad_row_fraction", "max_bad_fraction") == 0.05
    assert _check_default(graphs["one"], "events:bad_row_fraction", "max_bad_fraction") == 0.01
    assert _check_default(graphs["every"], "search/canary_evaluation:canary_gate", "beat_baselines") is False
    assert _check_default(graphs["one"], "homefeed/canary_evaluation:canary_gate", "beat_baselines") is True
    first = {name: g.resolve_job_def("nightly_refresh").partitions_def.start.date() for name, g in graphs.items()}
    assert first == {"one": date(2026, 1, 3), "every": date(2026, 1, 1), "online": date(2026, 1, 1)}


def test_importing_every_module_of_the_graph_reads_no_setting():
    """With a PINREC_SURFACES that no vocabulary has, every module of assets/ and orchestration/
    imports; only loading the code location reads the settings, and says what is wrong."""
    script = (
        "import importlib, pkgutil, assets, orchestration\n"
        "packages = (assets, orchestration)\n"
        "names = [m.name for p in packages for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(len(names), 'modules')\n"
        "from orchestration.definitions import defs\n"
        "try:\n"
        "    defs()\n"
        "except Exception as exc:\n"  # Dagster wraps what an area's definitions raise
        "    while not isinstance(exc, ValueError):\n"
        "        exc = exc.__cause__ or exc.__context__\n"
        "    print('load:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINREC_")}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT), "PINREC_SURFACES": "no_such_surface"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, load = proc.stdout.splitlines()[-2:]
    assert int(count.split()[0]) > 30
    assert load.startswith("load: PINREC_SURFACES names unknown surfaces ['no_such_surface']"), proc.stdout


def test_the_code_location_is_the_graph_of_the_settings_of_its_environment(monkeypatch):
    from orchestration.definitions import defs

    monkeypatch.setenv("PINREC_SURFACES", "search")
    monkeypatch.setenv("PINREC_ONLINE_CANARY", "1")
    loaded, built = defs(), build_definitions(load_settings())
    assert _keys(loaded) == _keys(built) and "search/canary_trial" in _keys(loaded)
    assert _checks(loaded) == _checks(built)
    for job in ("nightly_refresh", "retrain"):
        assert _job_assets(loaded, job) == _job_assets(built, job)
    repos = [d.get_repository_def() for d in (loaded, built)]
    assert {s.name for s in repos[0].schedule_defs} == {s.name for s in repos[1].schedule_defs}
    assert {s.name for s in repos[0].sensor_defs} == {s.name for s in repos[1].sensor_defs}
