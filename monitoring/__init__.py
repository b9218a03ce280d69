"""Monitoring: drift statistics the sensors compare against thresholds (no dagster imports)."""
