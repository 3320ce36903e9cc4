"""Records every HTTP response in the request metrics (a response observer, see observe.py).

Label values are bounded by construction, so no request can create new series:
the route is Quart's matched template or "unmatched" (see routing.py), a method
outside the standard set is "other", and a status becomes its class.
"""

from user_hasher.asgi import Scope
from user_hasher.metrics.registry import Metrics
from user_hasher.observe import ResponseObserver
from user_hasher.routing import route_of

# RFC 9110's methods; h11 accepts any token as a method, so anything else is one value.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "other"

_STATUS_CLASSES = {2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    # A 1xx never ends an exchange and a status outside 100-599 is a server bug:
    # either way the client got no proper answer, which is what 5xx counts.
    return _STATUS_CLASSES.get(status // 100, "5xx")


def record_responses(metrics: Metrics) -> ResponseObserver:
    observe = metrics.observe_response

    def record(scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        observe(
            (
                method if method in KNOWN_METHODS else OTHER_METHOD,
                route_of(scope),
                status_class(status),
            ),
            seconds,
        )

    return record
