"""Benchmarks of the ticketing services against raw baselines, run on demand with `make bench` (see README.md)."""
