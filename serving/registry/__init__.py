"""Publication: model versions in S3 (`store`: manifests, champion and canary pointers, the
version store), their faiss indexes (`index`, `shards`) and how a trained model becomes a
version (`publish`)."""
