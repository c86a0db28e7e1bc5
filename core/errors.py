"""The root of maedaw's own errors.

Every error maedaw raises on purpose (a bad file, a bad request, a refused
checkpoint...) derives from :class:`MaedawError`, so the command line catches
that one class, prints one ``error:`` line and exits 1; anything else is a bug
and keeps its traceback.
"""


class MaedawError(Exception):
    """An error with a message meant for the user."""
