"""Benchmarks: ``python -m benchmarks SUITE [--quick]`` prints one JSON object per figure."""
