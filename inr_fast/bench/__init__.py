"""Benchmarks behind ``inr-fast bench``: shared pieces (:mod:`~inr_fast.bench.common`), kernel timings
(:mod:`~inr_fast.bench.kernels`), the end-to-end suite (:mod:`~inr_fast.bench.suite`) and Q3 parity
with the seed recipe (:mod:`~inr_fast.bench.parity`)."""
