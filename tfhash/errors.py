"""The error type raised for bad arguments, and the one-line check that raises it."""


class TfhashError(ValueError):
    """Bad input to a tfhash function or command; the message names the argument."""


def check(condition, message):
    """Raises `TfhashError(message)` unless `condition` holds."""
    if not condition:
        raise TfhashError(message)
