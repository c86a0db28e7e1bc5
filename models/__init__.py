"""Audio-MAE and everything learned (arrives with issue 3)."""
