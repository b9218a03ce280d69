"""The Dagster webserver in a real headless Chromium: every asset of every group is drawn on its
group's asset graph page. Screenshots go to tests/artifacts/."""

import os

import pytest

from devstack.dagster_dev import DagsterUI
from pinrec_ops.defs.config import REPO_ROOT
from pinrec_ops.runs import code_location

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by scripts/setup.sh
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"


@pytest.fixture
def webserver(tmp_path):
    with DagsterUI(tmp_path, {**os.environ}) as ui:
        yield ui.url


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for assets_def in code_location().assets:
        for key in assets_def.keys:
            # a node shows the last part of its key ("homefeed/champion" is drawn as "champion")
            groups.setdefault(assets_def.group_names_by_key[key], []).append(key.path[-1])
    return groups


def test_asset_graph_pages_show_every_lifecycle_asset(webserver):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    groups = _groups()
    assert {"ingest", "features", "training"} <= set(groups)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{webserver}/asset-groups", wait_until="networkidle")
            # First visit: the "Join the Dagster community" pop-up covers the page.
            page.get_by_role("button", name="Skip").click(timeout=20_000)
            page.get_by_text("Global asset lineage").wait_for()
            page.screenshot(path=str(ARTIFACTS / "asset_lineage.png"))
            for group, keys in groups.items():
                page.goto(f"{webserver}/locations/pinrec_ops/asset-groups/{group}", wait_until="networkidle")
                for key in keys:
                    page.get_by_text(key, exact=True).first.wait_for(timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / f"asset_graph_{group}.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "asset_graph_ingest.png").stat().st_size > 10_000
