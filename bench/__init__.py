"""Benchmarks: each bench_*.py measures ratios against a same-run baseline; run.py assembles RESULTS.md."""
