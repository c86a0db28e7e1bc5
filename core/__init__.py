"""The bottom layer: the error root and small helpers every other package may use.

Imports nothing else of maedaw, so anything can depend on it without a cycle.
"""
