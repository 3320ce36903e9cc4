"""The error type handlers raise; run-time handlers in main.py turn it into JSON."""


class APIError(Exception):
    """A client mistake: answered as `{"error": message}` with the given 4xx status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
