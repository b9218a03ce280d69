"""Local processes of the embedded default, the tests and the benchmarks.

| module        | starts                                                                 |
|---------------|------------------------------------------------------------------------|
| `seaweedfs`   | SeaweedFS (`weed mini`), the S3 server of the embedded default          |
| `redis`       | a throwaway `redis-server` (Feast's Redis online store, Celery broker)  |
| `service`     | the retrieval service (`python -m serving.service.cli serve`) or a uvicorn thread |
| `dagster_dev` | `dagster dev` (the UI and the daemon) on the project's workspace        |

Every process binds 127.0.0.1 on a free port, runs in its own process group and is stopped by
its pid (`processes.stop_process_group`); `processes` holds the one helper for free ports,
process groups and readiness that all of them use. Nothing here imports dagster.
"""
