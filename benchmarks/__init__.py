"""Benchmarks: one command each, results recorded by benchmarks.results."""
