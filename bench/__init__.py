"""Benchmarks: `make bench`. Each prints its measurements next to a baseline from the same run."""
