"""Audio-MAE and everything learned: front end, model, checkpoints, training, taggers.

Pure tensors in, tensors out; the only files touched are checkpoints, caches and the
corpus folders handed in. Import the module you need (``maedaw.models.checkpoint``...):
the package itself imports nothing, so a light module (the training settings the command
line builds its options from) never drags torch into every ``maedaw`` command.
"""
