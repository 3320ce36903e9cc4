"""user_hasher: answers sha1(user_id + salt) over HTTP."""

from importlib.metadata import version

__version__ = version("user_hasher")
