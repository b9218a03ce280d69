"""Dagster assets and checks: thin wrappers that call the libraries (events, feature_pipeline,
storage, training, serving) and report metadata an operator can act on."""
