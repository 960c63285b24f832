"""Benchmark harness: analytic FLOP model, device peak table, MFU."""
