"""User-facing errors: raised with a message that says what is wrong and what to do.

Each kind of problem is its own class, so that callers choose what to do by type, never by reading the message:
the CLI prints any of them as one ``error: ...`` line (exit status 2); the service maps each kind to its HTTP
status (:data:`nst_lightning.serve.errors.STATUS`).
"""


class NSTError(RuntimeError):
    """An error caused by the user's input or environment (missing file, bad image, offline, ...).

    Entry points catch it, print the message without a traceback and exit with a non-zero status.
    """


class BadValue(NSTError, ValueError):
    """A value the user set (an option, a config key, a form field) is out of range or of the wrong type (also a
    ``ValueError``, so code that guards a call against bad values keeps working)."""


class NotFound(NSTError):
    """A file, folder, model or style that was named does not exist."""


class TooLarge(NSTError):
    """An input exceeds a size limit (pixels, bytes)."""


class UnsupportedFormat(NSTError):
    """A file is of a kind that is not read or written here (an image format, a suffix, a codec)."""


class Unreadable(NSTError):
    """A file of a supported kind could not be decoded: empty, truncated or corrupt."""
