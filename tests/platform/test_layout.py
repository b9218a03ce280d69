"""The project's shape: dagster is imported only by the code location (`orchestration/`), the
assets (`assets/`) and the benchmarks that run a job; `assets` never imports `orchestration`; no
library imports either; the simulated world (`world/`) is imported by no library below it; no
module imports another in a circle (file level); every asset declares kinds, owners, a
description and its area's tags (in the code location and in the online canary mode's graph)."""

import ast
from pathlib import Path

from assets.config import REPO_ROOT, load_settings
from orchestration.definitions import build_definitions
from orchestration.definitions import defs as code_location

LIBRARIES = ("events", "feature_pipeline", "feature_repo", "training", "serving", "storage", "monitoring", "devstack")
DAGSTER_PACKAGES = ("orchestration", "assets")
BELOW_THE_WORLD = ("events", "serving", "training", "feature_pipeline", "feature_repo", "storage", "monitoring")
PROJECT_PACKAGES = set(LIBRARIES) | set(DAGSTER_PACKAGES) | {"world"}
BENCHMARKS_RUNNING_A_JOB = {
    "benchmarks/nightly_refresh.py",
    "benchmarks/closed_loop.py",
    "benchmarks/celery_nightly.py",
    "benchmarks/chaos_verdicts.py",
    "benchmarks/chaos.py",
}


def _python_files() -> list[Path]:
    return [
        p
        for p in REPO_ROOT.rglob("*.py")
        if not any(
            part in {".venv", "var", "__pycache__", ".git"} or part.startswith(".")
            for part in p.relative_to(REPO_ROOT).parts
        )
    ]


def _imported_modules(path: Path) -> set[str]:
    """Dotted names `path` imports (absolute imports, anywhere in the file); `from a import b`
    counts as `a.b` as well as `a` (b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _imports(path: Path) -> set[str]:
    """Top-level package names `path` imports."""
    return {name.split(".")[0] for name in _imported_modules(path)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_orchestration_assets_and_job_benchmarks_import_dagster():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in (*DAGSTER_PACKAGES, "tests") or rel.as_posix() in BENCHMARKS_RUNNING_A_JOB:
            continue
        if {"dagster", "dagster_webserver", "dagster_celery", "dagster_k8s"} & _imports(path):
            offenders.append(rel.as_posix())
    assert offenders == []


def test_libraries_never_import_the_dagster_packages_and_assets_never_import_orchestration():
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in LIBRARIES and set(DAGSTER_PACKAGES) & _imports(path):
            offenders.append(rel.as_posix())
        if rel.parts[0] == "assets" and "orchestration" in _imports(path):
            offenders.append(rel.as_posix())
    assert offenders == []


def test_the_world_is_imported_by_no_library_below_it():
    offenders = [
        p.relative_to(REPO_ROOT).as_posix()
        for p in _python_files()
        if p.relative_to(REPO_ROOT).parts[0] in BELOW_THE_WORLD and "world" in _imports(p)
    ]
    assert offenders == []


def test_no_module_imports_another_in_a_circle():
    files = {_module_name(p): p for p in _python_files() if p.relative_to(REPO_ROOT).parts[0] in PROJECT_PACKAGES}
    graph = {name: {m for m in _imported_modules(path) if m in files and m != name} for name, path in files.items()}
    done: set[str] = set()

    def cycle_from(node, stack, on_stack):
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in done:
                found = cycle_from(nxt, stack + [nxt], on_stack | {nxt})
                if found:
                    return found
        done.add(node)
        return None

    cycles = [c for name in sorted(files) if name not in done and (c := cycle_from(name, [name], {name}))]
    assert cycles == []


def test_training_uses_only_the_event_contract():
    graph = set()
    for path in _python_files():
        if path.relative_to(REPO_ROOT).parts[0] == "training":
            graph |= (_imports(path) & PROJECT_PACKAGES) - {"training"}
    assert not graph - {"events"}


def _every_asset() -> list:
    """The assets of the code location and of the online canary mode's graph."""
    return [*code_location().assets, *build_definitions(load_settings({"PINREC_ONLINE_CANARY": "1"})).assets]


def test_every_asset_declares_kinds_owners_description_and_area():
    missing = []
    for assets_def in _every_asset():
        for key, spec in ((s.key, s) for s in assets_def.specs):
            problems = [
                what
                for what, ok in (
                    ("kinds", spec.kinds),
                    ("owners", spec.owners),
                    ("description", spec.description),
                    ("area tag", spec.tags.get("area")),
                )
                if not ok
            ]
            if problems:
                missing.append(f"{key.to_user_string()}: {', '.join(problems)}")
    assert missing == []


def test_assets_whose_output_depends_on_code_carry_a_code_version():
    versions = {
        spec.key.to_user_string(): spec.code_version for assets_def in _every_asset() for spec in assets_def.specs
    }
    assert all(versions.values()), [k for k, v in versions.items() if not v]
    assert versions["events"] == versions["event_quarantine"]


def test_no_module_is_over_600_lines():
    long = {
        p.relative_to(REPO_ROOT).as_posix(): n for p in _python_files() if (n := len(p.read_text().splitlines())) > 600
    }
    assert long == {}
