"""Benchmarks of the pipeline, each figure measured beside a baseline in the same run.

Run ``python -m bench`` (full sizes, minutes) or ``python -m bench --quick``; see bench/README.md.
Not part of the test suite: timings on a shared machine are reported, never asserted.
"""
