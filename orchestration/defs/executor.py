"""Which executor runs the steps of a run, chosen by the environment when the code location loads.

| PINREC_EXECUTOR | executor                                   | where the steps run                     |
|-----------------|--------------------------------------------|-----------------------------------------|
| (unset)         | Dagster's default (multiprocess/in-process) | in the run's process (or pod)           |
| celery          | dagster_celery.celery_executor             | Celery workers reading the broker queue |
| k8s             | dagster_k8s.k8s_job_executor               | one Kubernetes Job per step             |

The Celery broker and result backend come from PINREC_CELERY_BROKER / PINREC_CELERY_BACKEND
(read by the executor when a run starts, so a run's config can still override them). Pools keep
working under every executor: steps wait for a slot of their pool (`training`,
`feast_online_store`) in the instance, whoever runs them. deploy/ holds the instance configs and
docs/scale-out.md how to deploy them.
"""

import os

from dagster import Definitions, ExecutorDefinition, definitions

EXECUTOR_VARIABLE = "PINREC_EXECUTOR"
EXECUTOR_NAMES = ("default", "celery", "k8s")


def select_executor(environ: dict[str, str] | None = None) -> ExecutorDefinition | None:
    """The executor named by PINREC_EXECUTOR; None keeps Dagster's default executor."""
    env = os.environ if environ is None else environ
    name = env.get(EXECUTOR_VARIABLE, "").strip().lower() or "default"
    if name == "default":
        return None
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {"broker": {"env": "PINREC_CELERY_BROKER"}, "backend": {"env": "PINREC_CELERY_BACKEND"}},
            name="celery",
        )
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"{EXECUTOR_VARIABLE}={name!r}: expected one of {', '.join(EXECUTOR_NAMES)}")


@definitions
def executor() -> Definitions:
    return Definitions(executor=select_executor())
