"""The local single-node Kubernetes of ../shared/kube, for the cluster tests and the rehearsal.

    with local_cluster.started(images=[ref], netpol=True) as cluster:   # root; stops it always
        cluster.kubectl("apply", "-f", "user_hasher.yaml")
        cluster.wait_for(lambda: ..., timeout=60, what="3 pods ready")

Real Kubernetes v1.36 (kubelet, containerd, kube-proxy, CoreDNS, and NetworkPolicy with
`netpol=True`); what it lacks (no minikube binary, no metrics-server, one node) is in its
README. Its kubeconfig names the context `minikube`, so the Makefile's targets run against
it unchanged. The bundle is ../shared/kube beside the repository, or $KUBE_BUNDLE.
One cluster per machine: whoever starts it stops it, also when something fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proving.kubectl import Kubectl, KubectlError, Watch, kubectl_binary, tool_path
from proving.manifests import REPO as REPO_ROOT
from proving.waiting import wait_for

BUNDLE_ENV = "KUBE_BUNDLE"
# Each start gets a state directory of its own under here (certificates, kubeconfig, logs):
# a stop then tears down exactly the cluster that start made, never one someone else runs.
STATE_PARENT = Path("/tmp/kcluster")
# The bundle's socket directory (one cluster per machine).
RUN_DIR = Path("/run/kcluster")
CONTEXT = "minikube"
# Far above the start time the bundle's README gives (plus the image imports): a busy 2-core
# machine may take several times that.
START_TIMEOUT_SECONDS = 600.0
STOP_TIMEOUT_SECONDS = 300.0
# One image import (`docker save | ctr import`, a few hundred MB on a busy disk).
IMPORT_TIMEOUT_SECONDS = 600.0
# A Make target (a build, an image import, a rollout of a few pods) on a busy machine.
MAKE_TIMEOUT_SECONDS = 900.0
# What the Makefile's deploy targets call instead of the minikube CLI here.
MINIKUBE_STAND_IN = "python -m proving.minikube_stand_in"
# Debian packages start-cluster.sh needs (its README), by one command each.
REQUIRED_COMMANDS = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "ip": "iproute2",
    "iptables": "iptables",
    "openssl": "openssl",
    "curl": "curl",
    "xz": "xz-utils",
    "docker": "docker.io",
}
CNI_BRIDGE_PLUGINS = (Path("/usr/lib/cni/bridge"), Path("/opt/cni/bin/bridge"))


class ClusterError(RuntimeError):
    pass


# What a wait on the cluster counts as "not yet": a kubectl call that failed or took too long
# once, an object without the key asked for yet.
TRANSIENT_ERRORS = (KubectlError, ClusterError, subprocess.TimeoutExpired, OSError, KeyError)


def bundle_dir() -> Path:
    return Path(os.environ.get(BUNDLE_ENV) or REPO_ROOT.parent / "shared" / "kube").resolve()


def bundle_problem(netpol: bool = False) -> str | None:
    """Why no local cluster can be started here, or None when one can."""
    bundle = bundle_dir()
    if not (bundle / "start-cluster.sh").is_file():
        return f"no cluster bundle at {bundle} (set {BUNDLE_ENV} to its directory)"
    if os.geteuid() != 0:
        return "starting the local cluster needs root"
    commands = {**REQUIRED_COMMANDS, **({"ipset": "ipset"} if netpol else {})}
    missing = sorted({package for name, package in commands.items() if not shutil.which(name)})
    if not any(path.exists() for path in CNI_BRIDGE_PLUGINS):
        missing.append("containernetworking-plugins")
    if missing:
        return f"missing Debian packages: {' '.join(sorted(missing))}"
    try:
        kubectl_binary()
    except KubectlError as error:
        return str(error)
    return None


# What a cluster puts on the machine (the bundle's README, "Network fences"): its bridge and
# service device, its routes, its iptables rules and kube-proxy's chains.
CLUSTER_MARKS = re.compile(r"KUBE-|kcluster|cni0|kube-svc0|10\.244\.|10\.96\.")
# Of those, what only this bundle makes (a machine may run some other kube-proxy's KUBE- chains).
BUNDLE_MARKS = re.compile(r"kcluster|cni0|kube-svc0|10\.244\.|10\.96\.")


def host_network_state() -> frozenset[str]:
    """The routes, links and iptables rules that carry the cluster's names or ranges."""
    outputs = [
        subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
        for command in (["ip", "route", "show"], ["ip", "-o", "link", "show"], ["iptables-save"])
    ]
    # Interface indexes, iptables counters and timestamps change on their own.
    return frozenset(
        re.sub(r"^\d+: |\[\d+:\d+\]", "", line).strip()
        for output in outputs
        for line in output.splitlines()
        if CLUSTER_MARKS.search(line) and not line.startswith("#")
    )


def left_behind(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """What a start and stop left on the machine, from snapshots taken before the start and
    after the stop: every line that was not there before, and every line of the bundle's own
    still there. start-cluster.sh clears what a killed cluster left, so such a line in `before`
    must be gone `after` too; one of another system's (KUBE- chains of its own) may stay."""
    added = sorted(after - before)
    kept = sorted(line for line in after & before if BUNDLE_MARKS.search(line))
    return [f"added: {line}" for line in added] + [f"still there: {line}" for line in kept]


def cluster_processes() -> list[str]:
    """Processes of a local cluster (their command lines name its state or socket directory)."""
    listing = subprocess.run(
        ["pgrep", "-a", "-f", "kcluster"], capture_output=True, text=True, timeout=30
    ).stdout
    return [line for line in listing.splitlines() if "pgrep" not in line]


@dataclass(frozen=True)
class LocalCluster:
    bundle: Path
    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        """CA, admin certificate and key (ca.crt, admin.crt, admin.key), e.g. for Prometheus."""
        return self.state / "pki"

    @property
    def api_server(self) -> str:
        return "https://127.0.0.1:6443"

    def env(self) -> dict[str, str]:
        """Environment for anything that talks to this cluster (kubectl, make targets)."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KC_STATE": str(self.state),
            "PATH": tool_path(),
        }

    # --- kubectl ---------------------------------------------------------------

    @property
    def client(self) -> Kubectl:
        """kubectl against this cluster, in the repository root (so paths like
        user_hasher.yaml work)."""
        environment = {"KUBECONFIG": str(self.kubeconfig), "KC_STATE": str(self.state)}
        return Kubectl(CONTEXT, env=environment, cwd=REPO_ROOT)

    def kubectl(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        """`kubectl --context minikube ARGS` (Kubectl.run's options); with check (the
        default), a non-zero exit raises KubectlError with stderr."""
        return self.client.run(*args, **options)

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return self.client.get_json(*args)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.get_json("pods", "--namespace", namespace, "--selector", selector)["items"]

    def watch(self, resource: str, namespace: str, selector: str = "") -> Watch:
        """Records every watch event on these objects from now on (see Watch)."""
        return self.client.in_namespace(namespace).watch(resource, selector)

    def make(
        self, target: str, check: bool = True, **variables: str
    ) -> subprocess.CompletedProcess[str]:
        """`make TARGET NAME=VALUE...` against this cluster, as a person runs it against
        minikube, with only the minikube CLI stood in for (minikube_stand_in.py). stdout and
        stderr together in .stdout; with check, a non-zero exit raises with its tail."""
        assignments = [f"{name}={value}" for name, value in variables.items()]
        result = subprocess.run(
            [
                "make",
                "--no-print-directory",
                target,
                f"MINIKUBE={MINIKUBE_STAND_IN}",
                *assignments,
            ],
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=MAKE_TIMEOUT_SECONDS,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"make {target} exited {result.returncode}:\n{result.stdout[-6000:]}"
            )
        return result

    # --- images ----------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd" / "containerd.sock"

    def _ctr(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            **kwargs,
        )

    def has_image(self, ref: str) -> bool:
        listed = self._ctr("images", "ls", "-q", timeout=60, check=True).stdout.decode()
        return _containerd_name(ref) in listed.split()

    def import_image(self, ref: str) -> float:
        """Copies an image from the local Docker engine into the node's containerd; returns
        the seconds it took (0 when the node has it already: a reference names one build)."""
        if self.has_image(ref):
            self._copy_to_workers(ref)
            return 0.0
        started = time.monotonic()
        with subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE) as save:
            imported = self._ctr(
                "images", "import", "-", stdin=save.stdout, timeout=IMPORT_TIMEOUT_SECONDS
            )
            save.wait(timeout=IMPORT_TIMEOUT_SECONDS)
        if save.returncode != 0 or imported.returncode != 0 or not self.has_image(ref):
            raise ClusterError(f"importing {ref} failed: {imported.stderr.decode()[-2000:]}")
        self._copy_to_workers(ref)
        return time.monotonic() - started

    def _copy_to_workers(self, ref: str) -> None:
        """The image copied from the first node into every worker add_node added, as
        `minikube image load` loads it into every node of a multi-node minikube."""
        name = _containerd_name(ref)
        for socket in sorted(RUN_DIR.glob("nodes/*/containerd/containerd.sock")):
            worker = ["ctr", "-a", str(socket), "-n", "k8s.io"]
            listed = subprocess.run(
                [*worker, "images", "ls", "-q"], capture_output=True, text=True, timeout=60
            )
            if name in listed.stdout.split():
                continue
            with subprocess.Popen(
                [
                    "ctr",
                    "-a",
                    str(self.containerd_socket),
                    "-n",
                    "k8s.io",
                    "images",
                    "export",
                    "-",
                    name,
                ],
                stdout=subprocess.PIPE,
            ) as export:
                imported = subprocess.run(
                    [*worker, "images", "import", "-"],
                    stdin=export.stdout,
                    capture_output=True,
                    timeout=IMPORT_TIMEOUT_SECONDS,
                )
                export.wait(timeout=IMPORT_TIMEOUT_SECONDS)
            if export.returncode != 0 or imported.returncode != 0:
                raise ClusterError(
                    f"copying {ref} to {socket.parent.parent.name} failed: "
                    f"{imported.stderr.decode()[-2000:]}"
                )

    def task_pid(self, container_id: str) -> int:
        """The host PID of a running container's main process, from the node's containerd
        (`containerID` in a pod's status, with or without its `containerd://` prefix)."""
        task = container_id.removeprefix("containerd://")
        listed = self._ctr("tasks", "ls", timeout=60, check=True).stdout.decode()
        for line in listed.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == task and fields[2] == "RUNNING":
                return int(fields[1])
        raise ClusterError(f"containerd runs no task {task}:\n{listed}")

    def tag_image(self, ref: str, alias: str) -> None:
        """Gives an image in the node's containerd a second name (no copy)."""
        self._ctr(
            "images",
            "tag",
            "--force",
            _containerd_name(ref),
            _containerd_name(alias),
            timeout=60,
            check=True,
        )

    # --- waiting ---------------------------------------------------------------

    @staticmethod
    def wait_for(
        predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5
    ) -> Any:
        """Polls until predicate returns something truthy, and returns it; on timeout raises
        WaitTimeoutError with `what` (a failed kubectl or a missing key counts as not yet)."""
        return wait_for(predicate, timeout, what, interval, TRANSIENT_ERRORS)

    # --- lifecycle -------------------------------------------------------------

    def _script_env(self, **settings: str) -> dict[str, str]:
        return {**os.environ, "KC_STATE": str(self.state), "KC_RUN": str(RUN_DIR), **settings}

    def stop(self) -> str:
        """stop-cluster.sh: processes, pods, bridge, routes, iptables rules and state go.
        Returns its output."""
        result = subprocess.run(
            [str(self.bundle / "stop-cluster.sh")],
            env=self._script_env(),
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT_SECONDS,
        )
        if result.returncode != 0:
            raise ClusterError(f"stop-cluster.sh exited {result.returncode}:\n{result.stderr}")
        return result.stdout

    # --- nodes (add-node.sh, kill-node.sh, remove-node.sh) ----------------------

    def _node_script(self, script: str, *args: str, timeout: float = START_TIMEOUT_SECONDS) -> str:
        result = subprocess.run(
            [str(self.bundle / script), *args],
            env=self._script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{script} {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}"
            )
        return result.stdout

    def add_node(self, name: str, index: int, zone: str) -> str:
        """add-node.sh: a worker in its own network namespace, labelled with the zone (the
        first node becomes zone-a); the first node's images are copied into it. Its output."""
        return self._node_script("add-node.sh", name, str(index), zone)

    def kill_node(self, name: str) -> str:
        """kill-node.sh: power loss, every process of the worker SIGKILLed at once."""
        return self._node_script("kill-node.sh", name, timeout=STOP_TIMEOUT_SECONDS)

    def remove_node(self, name: str) -> str:
        """remove-node.sh: the worker taken away (also after kill_node), its Node deleted."""
        return self._node_script("remove-node.sh", name, timeout=STOP_TIMEOUT_SECONDS)

    def pid(self, component: str, node: str | None = None) -> int:
        """The PID of a component the bundle started: kube-apiserver, kube-proxy, ... of the
        first node, or of a worker added by add_node."""
        pids = self.state / "pids" if node is None else self.state / "nodes" / node / "pids"
        return int((pids / component).read_text().strip())

    @contextlib.contextmanager
    def paused(self, component: str, node: str | None = None) -> Iterator[int]:
        """The component stopped (SIGSTOP) for the block, continued (SIGCONT) whatever
        happens in it; yields its PID."""
        pid = self.pid(component, node)
        os.kill(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop_component(self, component: str) -> list[str]:
        """Stop a first-node component the way a crash would end it (SIGKILL); returns the
        command line to start it again with (start_component)."""
        pid = self.pid(component)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _is_gone(pid), 10, f"{component} gone")
        return [part.decode() for part in command]

    def start_component(self, component: str, command: list[str]) -> int:
        """Start a first-node component again as start-cluster.sh started it (its own
        session, appending to its log, its PID file rewritten, so stop-cluster.sh stops the
        new process); returns the new PID."""
        log = self.state / "logs" / f"{component}.log"
        started = subprocess.run(
            [
                *("sh", "-c", 'log=$1; shift; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!'),
                *("sh", str(log), *command),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        pid = int(started.stdout.strip())
        (self.state / "pids" / component).write_text(f"{pid}\n")
        return pid

    def is_up(self) -> bool:
        try:
            return self.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    @classmethod
    def attach(cls) -> LocalCluster:
        """The running cluster whose state directory $KC_STATE names (env() sets it)."""
        if not os.environ.get("KC_STATE"):
            raise ClusterError("KC_STATE is not set: which local cluster?")
        cluster = cls(bundle_dir(), Path(os.environ["KC_STATE"]))
        if not cluster.kubeconfig.exists() or not cluster.is_up():
            raise ClusterError(f"no local cluster answers (kubeconfig {cluster.kubeconfig})")
        return cluster

    @classmethod
    def start(
        cls, images: Sequence[str] = (), netpol: bool = False, log: Path | None = None
    ) -> LocalCluster:
        """start-cluster.sh with these images from the local Docker engine; NetworkPolicy
        is enforced with netpol. On failure it stops what it started, then raises."""
        STATE_PARENT.mkdir(parents=True, exist_ok=True)
        cluster = cls(bundle_dir(), Path(tempfile.mkdtemp(prefix="state-", dir=STATE_PARENT)))
        settings = {"KC_IMAGES": " ".join(images)}
        if netpol:
            settings["KC_NETPOL"] = "1"
        log_file = log.open("w") if log else subprocess.DEVNULL
        try:
            result = subprocess.run(
                [str(cluster.bundle / "start-cluster.sh")],
                env=cluster._script_env(**settings),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT_SECONDS,
            )
        except BaseException:
            cluster.stop()
            raise
        finally:
            if log:
                log_file.close()
        if result.returncode != 0:
            cluster.stop()
            output = log.read_text()[-4000:] if log else "(no log kept)"
            raise ClusterError(f"start-cluster.sh exited {result.returncode}:\n{output}")
        return cluster


@contextlib.contextmanager
def started(
    images: Sequence[str] = (), netpol: bool = False, log: Path | None = None
) -> Iterator[LocalCluster]:
    """A running cluster for the duration of the block; stopped whatever happens in it."""
    cluster = LocalCluster.start(images=images, netpol=netpol, log=log)
    try:
        yield cluster
    finally:
        cluster.stop()


def _is_gone(pid: int) -> bool:
    """No such process, or one that has exited and waits for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _containerd_name(ref: str) -> str:
    """How containerd names a Docker image reference: user-hasher:1 is
    docker.io/library/user-hasher:1."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"
