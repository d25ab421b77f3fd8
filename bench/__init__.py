"""Reproducible benchmarks of beam-caption against its peers; see bench/run.py and RESULTS.md."""
