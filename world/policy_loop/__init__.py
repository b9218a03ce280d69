"""The paired policy harness (issue 24): policies serving the same closed-loop days.

    from world.policy_loop import HarnessConfig, log_run, serve, compare
    from world.policy_loop.policies import RandomPolicy, PopularityPolicy, OraclePolicy, ModelPolicy

    cfg = HarnessConfig()                    # 2,000 users; log days 1-7, serve days 8-17
    run = log_run(cfg)                       # the logging policy's days (train log + held-out log)
    outcomes = {p.name: serve(p, run) for p in (RandomPolicy(), PopularityPolicy(), OraclePolicy())}
    rows = compare(outcomes, "random", cfg.world.n_items)   # per 1k slots, CIs, paired vs random

Models: `world.policy_loop.models.train_policies(run, names, cache_dir)` trains the named model
rows with the lifecycle's recipe (`training.plan.TrainingPlan`) on the log's training days and
returns `ModelPolicy` objects served through `LoadedVersion`. Modules: `harness` (config, log,
serving, paired statistics), `policies` (what each policy serves and how it scores items),
`log_baseline` (the non-neural baseline), `models` (training recipes, cached on disk).
"""

from world.policy_loop.harness import HarnessConfig, LogRun, PolicyOutcome, compare, log_run, serve

__all__ = ["HarnessConfig", "LogRun", "PolicyOutcome", "compare", "log_run", "serve"]
