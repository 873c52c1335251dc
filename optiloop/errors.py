"""The root of optiloop's exceptions: catch ``OptiloopError`` to handle every domain failure."""


class OptiloopError(Exception):
    """Base of every error optiloop raises on purpose, each with a message meant for the user."""
