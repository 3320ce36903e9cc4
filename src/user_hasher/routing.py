"""Which route served a request, for access logs and metrics labels.

Quart matches the URL once; a before_request hook records the matched rule's
template (never the raw path, which is unbounded and may carry user data) in the
ASGI scope, where middlewares outside Quart read it after the response.
"""

from quart import request

from user_hasher.asgi import Scope

ROUTE_SCOPE_KEY = "user_hasher.route"
# Every path that matches no route shares this one value: unknown paths must
# not create new log fields or metric series.
UNMATCHED_ROUTE = "unmatched"


async def record_route() -> None:
    rule = request.url_rule
    request.scope[ROUTE_SCOPE_KEY] = rule.rule if rule is not None else UNMATCHED_ROUTE


def route_of(scope: Scope) -> str:
    return scope.get(ROUTE_SCOPE_KEY, UNMATCHED_ROUTE)
