"""Data area: ingestion with quarantine, the feature tables, the online store."""
