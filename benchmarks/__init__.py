"""Benchmarks beside the library: `python -m benchmarks.<name>`."""
