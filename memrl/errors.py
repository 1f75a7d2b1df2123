"""Errors that are the user's to fix: the CLI prints them as one clear message, without a traceback."""


class UserError(Exception):
    """Bad input, a missing file or model, an unknown name: something the user can fix.

    The message must say what is wrong and, where possible, how to fix it.
    """


class DataError(UserError):
    """Malformed or missing data: the message names the file and line, or the missing field."""


class NotBuiltError(UserError):
    """A feature that a later piece of work will build: the CLI says so instead of faking it."""
