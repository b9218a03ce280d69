"""The Dagster webserver in a real headless Chromium: every asset of every group is drawn on its
group's asset graph page. Screenshots go to tests/artifacts/."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from orchestration.cli import reset_signals
from orchestration.config import REPO_ROOT
from orchestration.definitions import defs

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by scripts/setup.sh
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    log = open(tmp_path / "webserver.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=reset_signals,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"webserver did not come up: {(tmp_path / 'webserver.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode is not None


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for assets_def in defs.assets:
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
