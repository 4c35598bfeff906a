"""The one exception a request handler raises for a client error."""


class BadRequest(Exception):
    """A client error: ``status`` (4xx, or 503 when busy) and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
