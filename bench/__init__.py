"""Benchmarks of the API, run by hand (``make bench``); results live in docs/benchmarks.md.

Each benchmark measures headless-ops and its baseline in the same run on the same machine and
prints the ratio: absolute timings on a shared machine say little, ratios say what matters.
"""
