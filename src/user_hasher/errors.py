"""What a client gets when something is wrong: always a JSON body `{"error": ...}`."""

import logging

from quart import Quart
from werkzeug.exceptions import HTTPException, MethodNotAllowed

logger = logging.getLogger(__name__)

ErrorResponse = tuple[dict[str, str], int, dict[str, str]]


class APIError(Exception):
    """A client mistake, answered with the given 4xx status and message."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


async def _api_error(error: APIError) -> ErrorResponse:
    return {"error": error.message}, error.status_code, {}


async def _http_error(error: HTTPException) -> ErrorResponse:
    headers = {}
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return {"error": (error.name or "error").lower()}, error.code or 500, headers


async def _unexpected_error(error: Exception) -> ErrorResponse:
    # The traceback goes to the log; the client learns nothing about internals.
    logger.exception("unhandled error", extra={"event": "unhandled_error"})
    return {"error": "internal server error"}, 500, {}
