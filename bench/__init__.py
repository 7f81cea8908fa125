"""Benchmarks: each figure is measured next to a raw baseline in the same run (`make bench`)."""
