"""Reproducible measurements of vaeserve: run `make bench` (python -m benchmarks.run)."""
