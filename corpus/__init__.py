"""Corpus builders: the pre-training corpus (``maedaw corpus build``) and the labelled
tagging corpus (``maedaw corpus tags``), from the Debian allowlist and our own synthesis.

They fetch packages, run synthesisers and write clips; the models only ever see the
folders they leave.
"""
