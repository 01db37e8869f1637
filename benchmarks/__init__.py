"""Latency and throughput benchmarks of the mammo-cascade runtime against a seed-style PyTorch pipeline.

Run ``python -m benchmarks`` (see README, "Performance"); ``--smoke`` is the fast CI mode.
"""
