"""The benchmark suite: ``python -m benchmarks`` writes benchmarks/RESULTS.md and benchmarks/results.json."""
