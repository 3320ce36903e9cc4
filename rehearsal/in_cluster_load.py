"""The open-loop load generator as a client inside the cluster: what `make rollout-check`'s
Job runs, in the app's own image (Python's standard library and openloop.py only, both
mounted from a ConfigMap beside this file).

    python in_cluster_load.py --host user-hasher.user-hasher.svc.cluster.local. --port 80 \
        --rate 200 --seconds 60

The salt comes from $USER_SALT (the app's Secret), so every body is checked. The run is
bounded by --seconds and stops by itself. Output, one JSON object per line on stdout:
{"started_at": epoch seconds at zero on the records' clock} first, once the schedule runs;
then one [intended, latency, client, status, error, wait, detail, source] array per request
(source: the "ip:port" its connection left from); then {"records": count} last, so a reader
knows it saw them all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import openloop  # the file next to this one (proving/openloop.py in the repository)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True, help="of scheduled requests")
    parser.add_argument(
        "--keep-alive-connections",
        type=int,
        default=openloop.LoadPlan.keep_alive_connections,
        help="the keep-alive clients' pool",
    )
    options = parser.parse_args(argv)

    target = openloop.Target(options.host, options.port, os.environ.get("USER_SALT", ""))
    plan = openloop.LoadPlan(
        rate=options.rate,
        duration=options.seconds,
        max_requests=int(options.rate * options.seconds) + 1,
        keep_alive_connections=options.keep_alive_connections,
    )
    run = openloop.LoadRun(target, plan)
    print(json.dumps({"started_at": time.time() - run.elapsed()}), flush=True)
    records = run.start().wait()
    out = sys.stdout
    for r in records:
        row = [round(r.intended, 4), round(r.latency, 5), str(r.client), r.status]
        row += [r.error and str(r.error), round(r.wait, 5), r.detail, r.source]
        out.write(json.dumps(row) + "\n")
    out.write(json.dumps({"records": len(records)}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
