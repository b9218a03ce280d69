"""Retrieval service: publish and load versions (S3), encode, ANN search, merge, canary routing.

Modules: ``index`` (faiss build/tune/serialise), ``registry`` (versions, manifests, pointers,
retention), ``publish`` (model -> version), ``encoder`` (the one adapter to ``training``),
``retriever`` (a loaded version and its pipeline), ``versions`` (background pointer polling and
swaps), ``app`` (FastAPI), ``cli`` (operators: ``python -m serving.cli --help``).
"""
