"""The project's shape: dagster is imported only by the Dagster package (pinrec_ops/) and the
benchmarks that run a job; no library imports the Dagster package; the packages have no import
cycle; every asset declares kinds, owners, a description and its area's tags."""

import ast
from pathlib import Path

from pinrec_ops.defs.config import REPO_ROOT
from pinrec_ops.runs import code_location

LIBRARIES = ("events", "feature_pipeline", "feature_repo", "training", "serving", "storage", "monitoring", "devstack")
DAGSTER_PACKAGE = "pinrec_ops"
BENCHMARKS_RUNNING_A_JOB = {"benchmarks/nightly_refresh.py", "benchmarks/closed_loop.py", "benchmarks/celery_nightly.py",
                            "benchmarks/chaos.py"}


def _python_files() -> list[Path]:
    return [p for p in REPO_ROOT.rglob("*.py")
            if not any(part in {".venv", "var", "__pycache__", ".git"} or part.startswith(".") for part in
                       p.relative_to(REPO_ROOT).parts)]


def _imports(path: Path) -> set[str]:
    """Top-level module names `path` imports (absolute imports, anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_dagster_package_and_job_benchmarks_import_dagster():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in (DAGSTER_PACKAGE, "tests") or rel.as_posix() in BENCHMARKS_RUNNING_A_JOB:
            continue
        if {"dagster", "dagster_webserver", "dagster_celery", "dagster_k8s"} & _imports(path):
            offenders.append(rel.as_posix())
    assert offenders == []


def test_libraries_never_import_the_dagster_package():
    offenders = [p.relative_to(REPO_ROOT).as_posix() for p in _python_files()
                 if p.relative_to(REPO_ROOT).parts[0] in LIBRARIES and DAGSTER_PACKAGE in _imports(p)]
    assert offenders == []


def test_packages_have_no_import_cycle():
    packages = set(LIBRARIES) | {DAGSTER_PACKAGE}
    graph: dict[str, set[str]] = {p: set() for p in packages}
    for path in _python_files():
        package = path.relative_to(REPO_ROOT).parts[0]
        if package in packages:
            graph[package] |= (_imports(path) & packages) - {package}

    def cycle_from(node, stack):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                return stack[stack.index(nxt):] + [nxt]
            found = cycle_from(nxt, stack + [nxt])
            if found:
                return found
        return None

    cycles = [c for p in sorted(packages) if (c := cycle_from(p, [p]))]
    assert cycles == []
    assert not graph["training"] - {"events"}, "training may only use the event contract"


def test_every_asset_declares_kinds_owners_description_and_area():
    missing = []
    for assets_def in code_location().assets:
        for key, spec in ((s.key, s) for s in assets_def.specs):
            problems = [what for what, ok in (("kinds", spec.kinds), ("owners", spec.owners),
                                              ("description", spec.description),
                                              ("area tag", spec.tags.get("area"))) if not ok]
            if problems:
                missing.append(f"{key.to_user_string()}: {', '.join(problems)}")
    assert missing == []


def test_assets_whose_output_depends_on_code_carry_a_code_version():
    versions = {spec.key.to_user_string(): spec.code_version
                for assets_def in code_location().assets for spec in assets_def.specs}
    assert all(versions.values()), [k for k, v in versions.items() if not v]
    assert versions["events"] == versions["event_quarantine"]
