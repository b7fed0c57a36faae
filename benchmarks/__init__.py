"""Benchmarks of the hot request path: `python -m benchmarks` (see benchmarks/README.md)."""
