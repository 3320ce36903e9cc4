"""`python -m user_hasher` (or `user-hasher`): validate settings, configure logs, serve
until signalled. The one way to start the service."""

import asyncio
import json
import logging
import sys

from user_hasher.app import create_service
from user_hasher.logs import configure_logging
from user_hasher.server import serve
from user_hasher.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(json.dumps({"level": "CRITICAL", "message": str(error)}), file=sys.stderr)
        return 2
    configure_logging(settings.LOG_LEVEL, settings.APP_VERSION, settings.APP_REVISION)
    try:
        asyncio.run(serve(create_service(settings)))
    except OSError as error:  # typically the port is taken: say so in one line, not a traceback
        logging.getLogger("user_hasher").critical(
            "cannot serve: %s", error, extra={"event": "serve_failed"}
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
