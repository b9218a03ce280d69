"""The command lines answer an operator's mistakes with one line and an exit code, never a
traceback: unknown choices and malformed dates are usage errors (exit 2) naming the value; missing
S3 credentials or a server that is not running stop with a hint at how to get one (exit 1)."""

import os
import subprocess
import sys

import pytest

from storage.paths import REPO_ROOT


def _run(module: str, args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
    )


def _without_s3(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PINREC_S3", "PINREC_DATA_DIR"))}
    return {
        **env,
        "DAGSTER_HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PINREC_VAR_DIR": str(tmp_path / "var"),
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["lifecycle", "--source", "foo"], "invalid choice: 'foo'"),
        (["lifecycle", "--start", "2026-13-01"], "'2026-13-01' is not a date"),
        (["lifecycle", "--days", "0"], "'0' must be at least 1"),
        (["backfill", "--from", "yesterday", "--to", "2026-01-02"], "'yesterday' is not a date"),
        (["backfill", "--from", "2026-01-01", "--to", "2026-01-02", "--job", "weekly"], "invalid choice: 'weekly'"),
    ],
)
def test_pinrec_ops_usage_errors_name_the_bad_value_and_exit_2(args, message):
    proc = _run("orchestration.cli", args, dict(os.environ))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["versions", "bogus"], "invalid choice: 'bogus'"),
        (["canary", "homefeed", "v1", "--traffic", "2"], "'2' is not a fraction in [0, 1]"),
        (["retain", "homefeed", "--keep", "0"], "'0' must be at least 1"),
        (["serve", "--surface", "email"], "invalid choice: 'email'"),
    ],
)
def test_serving_cli_usage_errors_name_the_bad_value_and_exit_2(args, message):
    proc = _run("serving.service.cli", args, dict(os.environ))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_backfill_without_s3_credentials_is_one_line_and_no_traceback(tmp_path):
    proc = _run("orchestration.cli", ["backfill", "--from", "2026-01-01", "--to", "2026-01-02"], _without_s3(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("pinrec-ops backfill: no S3 credentials") and "pinrec-ops ui" in line


def test_serving_cli_without_s3_credentials_is_one_line_and_no_traceback(tmp_path):
    proc = _run("serving.service.cli", ["versions", "homefeed"], _without_s3(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: no S3 credentials") and "source var/s3.env" in line


def test_serving_cli_with_the_server_down_is_one_line_and_no_traceback(tmp_path):
    from devstack.processes import free_port

    env = {
        **_without_s3(tmp_path),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "PINREC_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    proc = _run("serving.service.cli", ["promote", "homefeed", "v1"], env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "is not reachable" in line and "pinrec-ops ui" in line


def test_serve_defaults_to_the_main_commands_feast_data_and_says_when_there_is_none(tmp_path, s3_server):
    env = {**_without_s3(tmp_path), **s3_server.env()}
    proc = _run("serving.service.cli", ["serve", "--surface", "homefeed"], env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    expected = tmp_path / "var" / "simulated" / "feast"
    assert f"no Feast registry under {expected}" in proc.stderr and "./scripts/main.sh" in proc.stderr
