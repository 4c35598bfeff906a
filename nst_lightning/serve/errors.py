"""How the service answers an error: the HTTP status comes from the error's type, never from its message.

Every client error of the request path is one of the kinds of :mod:`nst_lightning.errors` (the library's decoder
and :class:`~nst_lightning.inference.StylizeOptions` raise the same ones), mapped here by :data:`STATUS`;
:class:`Busy` (503) is the one refusal that is no such kind.
"""

from __future__ import annotations

from nst_lightning.errors import BadValue, NotFound, NSTError, TooLarge, Unreadable, UnsupportedFormat

# The status of each kind of user error (the most specific class of an error that is listed decides).
STATUS: dict[type[NSTError], int] = {
    TooLarge: 413,  # bytes or pixels above a limit
    UnsupportedFormat: 415,  # not a form, not an image content type, not a format we read
    Unreadable: 400,  # an empty, truncated or corrupt upload, a malformed form
    BadValue: 422,  # a form field out of range or of the wrong type, an unknown style
    NotFound: 404,  # a path that names nothing (a thumbnail of no style)
}
DEFAULT_STATUS = 422  # any other NSTError: the request asked for something this service cannot do


def status_of(exc: NSTError) -> int:
    """The HTTP status of a user error: that of the first class in its MRO listed in :data:`STATUS`."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return DEFAULT_STATUS


class Busy(Exception):
    """The service is at a bound it keeps (the model queue is full): 503 with ``Retry-After``. Not a user error,
    so not an :class:`NSTError`: the same request succeeds later."""


BUSY_STATUS = 503
