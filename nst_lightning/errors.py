"""User-facing errors: raised with a message that says what is wrong and what to do."""


class NSTError(RuntimeError):
    """An error caused by the user's input or environment (missing file, bad image, offline, ...).

    Entry points catch it, print the message without a traceback and exit with a non-zero status.
    """
