"""The production configs in deploy/ load: instance configs validate against the schemas of the
classes they name (credentials from dummy environment variables, nothing connected), the K8s run
launcher builds from its config, the Celery worker config resolves, the Helm values agree with
the instance config, and the code location validates with each executor selected."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.ref import InstanceRef

from assets.config import REPO_ROOT

pytestmark = pytest.mark.services  # starts processes of its own

DEPLOY = REPO_ROOT / "deploy"
# What a deployment puts in the environment (from Secrets / ConfigMaps); dummy values here.
DEPLOY_ENV = {
    "DAGSTER_PG_HOST": "postgres.test.internal",
    "DAGSTER_PG_PORT": "5433",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_K8S_NAMESPACE": "pinrec",
    "PINREC_CELERY_BROKER": "redis://redis.test.internal:6379/1",
    "PINREC_CELERY_BACKEND": "redis://redis.test.internal:6379/2",
}
INSTANCE_CONFIGS = {
    "k8s": ("dagster_k8s", "K8sRunLauncher"),
    "celery": ("dagster", "DefaultRunLauncher"),
}


@pytest.fixture
def deploy_env(monkeypatch):
    for name, value in DEPLOY_ENV.items():
        monkeypatch.setenv(name, value)
    return DEPLOY_ENV


def resolved_config(class_data):
    """The config of one configurable class of the instance, validated against that class's own
    schema with `env:` values resolved (what rehydrating it does, without constructing it)."""
    module = __import__(class_data.module_name, fromlist=[class_data.class_name])
    klass = getattr(module, class_data.class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), class_data.config_dict)
    assert result.success, f"{class_data.class_name}: {[e.message for e in result.errors]}"
    return result.value


def instance_ref(name: str, tmp_path: Path) -> InstanceRef:
    return InstanceRef.from_dir(str(tmp_path), config_dir=str(DEPLOY / name))


@pytest.mark.parametrize("name", sorted(INSTANCE_CONFIGS))
def test_instance_config_validates_with_postgres_credentials_from_the_environment(name, deploy_env, tmp_path):
    import sqlalchemy
    from dagster_postgres.utils import pg_url_from_config

    ref = instance_ref(name, tmp_path)
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    url = pg_url_from_config(resolved_config(ref.storage_data))
    assert url == "postgresql+psycopg2://dagster:not-a-real-password@postgres.test.internal:5433/dagster"
    # the URL's driver is installed (SQLAlchemy 2.1's plain postgresql:// would need psycopg 3);
    # creating the engine does not connect
    assert sqlalchemy.create_engine(url).dialect.driver == "psycopg2"
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == INSTANCE_CONFIGS[name]
    resolved_config(ref.run_launcher_data)
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    resolved_config(ref.run_coordinator_data)


@pytest.mark.parametrize("name", sorted(INSTANCE_CONFIGS))
def test_instance_config_keeps_the_embedded_pool_limit(name, monkeypatch, tmp_path):
    from orchestration.runs import dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "embedded"))
    embedded = yaml.safe_load((dagster_home(tmp_path / "unused") / "dagster.yaml").read_text())
    production = yaml.safe_load((DEPLOY / name / "dagster.yaml").read_text())
    assert production["concurrency"]["pools"]["default_limit"] == embedded["concurrency"]["pools"]["default_limit"] == 1


def test_k8s_run_launcher_builds_from_the_repo_config(deploy_env, tmp_path):
    """Everything but the cluster connection: the in-cluster login is swapped for a kubeconfig
    naming an unreachable API server (the launcher only reads it)."""
    from dagster._serdes import ConfigurableClassData
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "test", "user": {"token": "dummy"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    data = instance_ref("k8s", tmp_path).run_launcher_data
    config = {**data.config_dict, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    launcher = ConfigurableClassData(data.module_name, data.class_name, yaml.safe_dump(config)).rehydrate(
        K8sRunLauncher
    )
    assert launcher.job_namespace == "pinrec"
    assert launcher.env_secrets == ["pinrec-s3", "pinrec-redis"]
    assert [m["mount_path"] for m in launcher.volume_mounts] == ["/var/pinrec"]
    assert "DAGSTER_PG_HOST" in launcher.env_vars


def test_helm_values_agree_with_the_k8s_instance_config():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    instance = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "orchestration.definitions"]
    launcher_values = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = instance["run_launcher"]["config"]
    assert values["runLauncher"]["type"] == instance["run_launcher"]["class"]
    assert [s["name"] for s in launcher_values["envSecrets"]] == launcher["env_secrets"]
    assert [s["name"] for s in launcher_values["envConfigMaps"]] == launcher["env_config_maps"]
    assert launcher_values["volumes"] == launcher["volumes"]
    assert launcher_values["resources"] == launcher["resources"]
    assert values["concurrency"]["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert values["concurrency"]["pools"]["granularity"] == instance["concurrency"]["pools"]["granularity"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]


def test_celery_worker_config_reads_broker_and_backend_from_the_environment(deploy_env, monkeypatch, tmp_path):
    from dagster_celery.cli import get_validated_config

    config = get_validated_config(str(DEPLOY / "celery" / "celery.yaml"))
    assert config["broker"] == deploy_env["PINREC_CELERY_BROKER"]
    assert config["backend"] == deploy_env["PINREC_CELERY_BACKEND"]


def test_selected_executor_runs_every_job_and_training_keeps_its_pool():
    import dagster as dg

    from orchestration.definitions import defs as code_location
    from orchestration.defs.executor import select_executor

    assert select_executor({}) is None
    with pytest.raises(ValueError, match="PINREC_EXECUTOR"):
        select_executor({"PINREC_EXECUTOR": "spark"})
    for name in ("celery", "k8s"):
        # what orchestration/definitions.py builds when PINREC_EXECUTOR=<name>
        scaled = dg.Definitions.merge(
            code_location(), dg.Definitions(executor=select_executor({"PINREC_EXECUTOR": name}))
        )
        for job in ("nightly_refresh", "retrain"):
            assert scaled.resolve_job_def(job).executor_def.name == name
        graph = scaled.resolve_asset_graph()
        pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
        assert pools["pretrained_model"] == {"training"}
        assert pools["homefeed/finetuned_model"] == {"training"}
        assert pools["online_features"] == {"feast_online_store"}


@pytest.mark.parametrize("name, executor", [("celery", "celery"), ("k8s", "k8s")])
def test_code_location_validates_on_the_production_instance_with_its_executor(name, executor, tmp_path):
    """`dagster definitions validate` with PINREC_EXECUTOR set, on the production instance config
    with only its Postgres storage swapped for SQLite (there is no Postgres server here)."""
    config = yaml.safe_load((DEPLOY / name / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path)}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        **DEPLOY_ENV,
        "DAGSTER_HOME": str(tmp_path),
        "PINREC_EXECUTOR": executor,
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "orchestration.definitions"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stderr + proc.stdout
