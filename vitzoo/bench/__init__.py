"""Measuring speed: the timing method shared by ``vitzoo bench`` and ``benchmarks/`` scripts.

* :mod:`vitzoo.bench.timing` -- interleaved repetitions, medians and spreads, peak memory;
* :mod:`vitzoo.bench.roofline` -- FLOPs per image and the machine's matmul rate at the model's
  dominant GEMM shape;
* :mod:`vitzoo.bench.runner` -- what ``vitzoo bench`` measures for one model.
"""
