"""Serving, split by job: ``registry/`` (versions in S3: manifests, pointers, indexes, publish),
``service/`` (the online service: routes, schemas, micro-batching, retrieval, load checks,
``python -m serving.service.cli --help`` for operators), ``evaluation/`` (what the offline canary
computes and its gate). ``service`` and ``evaluation`` import ``registry``; ``registry`` imports
neither (the load check a pointer needs is handed to it).
"""
