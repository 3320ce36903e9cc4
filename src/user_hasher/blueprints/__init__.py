"""The routes, one blueprint per module, and how their handlers reach the app's state."""

from typing import TYPE_CHECKING, cast

from quart import current_app

if TYPE_CHECKING:  # app.py imports the blueprints: at run time this would be a cycle
    from user_hasher.app import UserHasherApp

# The app serving the current request, typed: handlers read its salt, metrics and lifecycle
# as attributes. Quart's own proxy under its real type, so a request pays no extra lookup.
serving_app = cast("UserHasherApp", current_app)
