"""The main command, then the Dagster UI in a real headless Chromium on the instance it wrote: the
runs are runs of the named jobs (listed on the nightly_refresh job's Runs page), every asset of
every group is drawn on its group's graph, an asset's numeric metadata is drawn as plots, and the
canary_gate check shows every rule's margin. Screenshots go to tests/artifacts/."""

import dagster as dg
import pytest

from assets.config import REPO_ROOT
from devstack.dagster_dev import DagsterUI
from orchestration.definitions import defs as code_location
from tests.helpers import cli_env, pinrec_ops

pytestmark = pytest.mark.services  # starts processes of its own

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by scripts/setup.sh
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
TINY = {
    "PINREC_SIM_USERS": "150",
    "PINREC_SIM_ITEMS": "400",
    "PINREC_SIM_EVENTS_PER_DAY": "4000",
    "PINREC_SIM_DAYS": "4",
    "PINREC_TRAIN_PRETRAIN_EPOCHS": "1",
    "PINREC_TRAIN_PRETRAIN_MIN_STEPS": "10",
    "PINREC_TRAIN_FINETUNE_MIN_STEPS": "5",
    "PINREC_TRAIN_D_MODEL": "32",
}


@pytest.fixture(scope="module")
def main_command(tmp_path_factory):
    """`pinrec-ops lifecycle` (README command 1's job) on a tiny world, in its own folders."""
    tmp = tmp_path_factory.mktemp("main")
    env = cli_env(
        tmp / "var", {"PINREC_DATA_DIR": str(tmp / "data"), "DAGSTER_HOME": str(tmp / "dagster_home")}, training=TINY
    )
    proc = pinrec_ops(tmp / "var", "lifecycle", env=env, training={})
    return tmp, env, proc.stdout


def test_main_command_runs_are_runs_of_nightly_refresh_and_retrain(main_command):
    tmp, _, stdout = main_command
    with dg.DagsterInstance.from_config(str(tmp / "dagster_home")) as instance:
        runs = list(reversed(instance.get_runs()))
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert [(r.job_name, r.tags["dagster/partition"]) for r in runs] == [("nightly_refresh", d) for d in days] + [
        ("retrain", days[-1])
    ]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.tags["pinrec/trigger"] == "lifecycle" for r in runs)
    # every run green, a refused candidate included (a verdict, not an error); the summary says which
    assert ("passed" in stdout or "not promoted: " in stdout) and (tmp / "data" / "summary.json").exists()


@pytest.fixture(scope="module")
def webserver(main_command):
    tmp, env, _ = main_command
    with DagsterUI(tmp / "dagster_home", env) as ui:
        yield ui.url


@pytest.fixture(scope="module")
def page(webserver):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"{webserver}/asset-groups", wait_until="networkidle")
            # First visit: the "Join the Dagster community" pop-up covers the page.
            page.get_by_role("button", name="Skip").click(timeout=20_000)
            page.get_by_text("Global asset lineage").wait_for()
            yield page
        finally:
            browser.close()


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for assets_def in code_location().assets:
        for key in assets_def.keys:
            # a node shows the last part of its key ("homefeed/champion" is drawn as "champion")
            groups.setdefault(assets_def.group_names_by_key[key], []).append(key.path[-1])
    return groups


def test_asset_graph_pages_show_every_lifecycle_asset(page, webserver):
    groups = _groups()
    assert {"ingest", "features", "training"} <= set(groups)
    page.screenshot(path=str(ARTIFACTS / "asset_lineage.png"))
    for group, keys in groups.items():
        page.goto(f"{webserver}/locations/pinrec_ops/asset-groups/{group}", wait_until="networkidle")
        for key in keys:
            page.get_by_text(key, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / f"asset_graph_{group}.png"))
    assert (ARTIFACTS / "asset_graph_ingest.png").stat().st_size > 10_000


def test_nightly_refresh_job_page_lists_the_main_commands_runs(page, webserver):
    page.goto(f"{webserver}/locations/pinrec_ops/jobs/nightly_refresh/runs", wait_until="networkidle")
    for day in ("2026-01-01", "2026-01-04"):
        page.get_by_text(f"partition: {day}").first.wait_for(timeout=30_000)
    assert page.get_by_text("No runs found").count() == 0
    page.screenshot(path=str(ARTIFACTS / "nightly_refresh_runs.png"))


def test_asset_metadata_is_drawn_as_plots(page, webserver):
    page.goto(f"{webserver}/assets/events", wait_until="networkidle")
    page.get_by_role("button", name="Plots").click(timeout=30_000)
    page.get_by_role("button", name="Events").last.click()  # plot over materializations
    page.get_by_text("rows_good", exact=True).first.wait_for(timeout=30_000)
    page.locator("canvas").first.wait_for(timeout=30_000)
    assert page.locator("canvas").count() >= 4  # bad_fraction, row counts, users, items, ...
    page.screenshot(path=str(ARTIFACTS / "events_plots.png"), full_page=True)


def test_canary_gate_check_page_shows_each_rule_and_its_margin(page, webserver):
    page.goto(f"{webserver}/assets/homefeed/canary_evaluation?view=checks", wait_until="networkidle")
    page.get_by_text("margin/recall@100", exact=True).first.wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert "This is a blocking asset check" in body
    for expected in ("rules", "floor", "latency cap", "margin/latency_p99_ms", "overridden_by_run_config"):
        assert expected in body, expected
    page.screenshot(path=str(ARTIFACTS / "canary_gate.png"), full_page=True)
