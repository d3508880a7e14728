"""Benchmarks of rxjobs, each against a baseline measured in the same run.

Run them all from the repository root with ``python -m bench``; each module
also runs on its own (``python -m bench.cleanup_bench --help``).
"""
