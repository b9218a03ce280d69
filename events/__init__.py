"""Event data: the contract every stage shares, the sources that produce it, and ingestion."""
