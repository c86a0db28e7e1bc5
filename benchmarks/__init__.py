"""Benchmarks and evaluation (``maedaw bench …``, ``maedaw eval-model``).

Speed, memory and quality targets live here, beside their results (``results.md``),
never in timed unit tests.
"""
