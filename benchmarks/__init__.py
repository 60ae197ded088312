"""Benchmarks of defusal, run by ``make bench`` (``python -m benchmarks``).

Each benchmark module defines ``run(size) -> list[Table]`` where ``size`` is ``"full"`` for the
real measurement or ``"tiny"`` for the smoke run the test suite does. Both sides of a comparison
are measured in the same process, so their ratio holds on a noisy shared machine.
"""
