"""The rehearsal on the local Kubernetes of ../shared/kube (the default mode).

It deploys the current build the way people do (`make minikube-deploy`, only the minikube
steps stood in for: proving/minikube_stand_in.py), then sends ONE open-loop load to
the Service's ClusterIP, port 80, from this machine, for the whole run. kube-proxy's
iptables rules, programmed from the EndpointSlices, pick a pod for each new connection:
the path a client inside the cluster takes. Nothing of ours retries or health-checks in
that path: the only protection the clients get is Kubernetes' endpoint machinery and the
app's drain. Both client kinds run at once, at a share of the saturation measured through
the same ClusterIP.

The load and the /metrics scrapes come from the node. The NetworkPolicy admits the load on
purpose: it opens the pods' `http` port to every source, which is what makes the Service
usable at all; the `metrics` port it opens to the monitoring namespace only, and the policy
engine admits the node in any case, as it must for the kubelet's probes.

The scenarios run one after another, each from a steady app (its pods ready, one
revision), a steady stretch, then its event, until the app is steady again; together they
cover the whole run, so no failed request can fall between them unseen. The last, the
negative control, runs the pods without their drain and must lose requests.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proving.docker import DOCKER, build_image, engine_problem
from proving.local_cluster import (
    TRANSIENT_ERRORS,
    ClusterError,
    LocalCluster,
    bundle_problem,
    started,
)
from proving.manifests import MANIFEST, app_container, load_documents, only, secret_values
from proving.openloop import LoadPlan, LoadRun, Target, measure_saturation
from rehearsal.observe import (
    Observer,
    deletion_seen,
    endpoint_readiness,
    pod_revision,
    restart_count,
    turned_not_ready,
)
from rehearsal.report import Event, Gate, Rehearsal, Role
from rehearsal.stage import Fleet, Stage, log

# A scenario's event: what it does to the pods that were steady before it.
Act = Callable[[Sequence[dict[str, Any]]], None]
SATURATION_CONNECTIONS = 8
SATURATION_SECONDS = 3.0
# Well below saturation, so that queueing is not the story, and the load generator, the
# pods and the control plane share this machine's cores with room to spare.
RATE_SHARE_OF_SATURATION = 0.4
# Half the requests on keep-alive connections, half on a new connection each.
KEEP_ALIVE_SHARE = 0.5
STEADY_SECONDS = 6.0
# The rollouts' event windows together must hold at least this many requests.
MIN_ROLLOUT_REQUESTS = 20_000
# The load's own bound: it stops by itself after this long even if nobody stopped it (the
# scenarios take about half of it).
LOAD_BOUND_SECONDS = 480.0
# One scenario's wait for the app to be steady again (a rollout of 3 pods, each a start
# plus minReadySeconds, on a busy machine).
SETTLE_TIMEOUT_SECONDS = 240.0
PDB_WAIT_SECONDS = 60.0
# Without a drain a pod loses only the requests that meet it in the short time between its
# listener closing and kube-proxy dropping it (on one node, tens of milliseconds), so one
# restart can, rarely, lose none: the control restarts again, at most this many times in
# all, until it has recorded a failure.
CONTROL_RESTARTS = 3
PDB_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget"
NEW_REVISION_SUFFIX = "rehearsal"
DOCKER_BUILD_TIMEOUT_SECONDS = 300.0
NOT_READY_SOURCE = (
    "SIGTERM: the container runtime's timestamp on the app's own 'draining' log line "
    "(kubectl logs --timestamps; for the SIGKILL fault, the moment of the kill); not ready: "
    "arrival of the EndpointSlice watch event that shows the pod's endpoint not ready (or "
    "gone). Negative: the endpoint turned not ready before the app got its SIGTERM."
)


@dataclass(frozen=True)
class App:
    """What the rehearsal needs to know about the app, read from user_hasher.yaml."""

    namespace: str
    deployment: str
    pod_selector: str
    service: str
    service_port: int
    metrics_port: int
    salt: str

    @classmethod
    def from_manifest(cls, path: Path = MANIFEST) -> App:
        docs = load_documents(path)
        deployment, service = only(docs, "Deployment"), only(docs, "Service")
        container = app_container(deployment)
        (metrics_port,) = (p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        (service_port,) = (p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
        (salt_ref,) = (
            env["valueFrom"]["secretKeyRef"]
            for env in container["env"]
            if env["name"] == "USER_SALT"
        )
        secret = next(
            doc
            for doc in docs
            if doc.get("kind") == "Secret" and doc["metadata"]["name"] == salt_ref["name"]
        )
        labels = deployment["spec"]["selector"]["matchLabels"]
        return cls(
            namespace=deployment["metadata"]["namespace"],
            deployment=deployment["metadata"]["name"],
            pod_selector=",".join(f"{key}={value}" for key, value in labels.items()),
            service=service["metadata"]["name"],
            service_port=service_port,
            metrics_port=metrics_port,
            salt=secret_values(secret)[salt_ref["key"]],
        )


def build_new_revision(base_ref: str, revision: str) -> str:
    """A second build of the running one, of the same package version, that reports another
    revision: its image plus APP_REVISION, built by the local Docker engine (a real build with
    an image ID of its own, as a new commit's would be); returns its unique reference
    (NAME:<revision>-<12 hex digits of its image ID>)."""
    with tempfile.TemporaryDirectory() as scratch:
        id_file = Path(scratch) / "image.id"
        subprocess.run(
            [DOCKER, "build", "--network=host", "--iidfile", str(id_file), "-"],
            input=f"FROM {base_ref}\nENV APP_REVISION={revision}\n",
            capture_output=True,
            text=True,
            timeout=DOCKER_BUILD_TIMEOUT_SECONDS,
            check=True,
        )
        image_id = id_file.read_text().strip().removeprefix("sha256:")
    ref = f"{base_ref.rsplit(':', 1)[0]}:{revision}-{image_id[:12]}"
    subprocess.run([DOCKER, "tag", image_id, ref], capture_output=True, timeout=60, check=True)
    return ref


def short(pod: str) -> str:
    """A pod's own suffix, enough to tell pods apart in a plot."""
    return pod.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class ClusterFleet:
    """The app's Deployment as the rehearsal's watches show it; each pod's build read from
    its /metrics."""

    observer: Observer
    metrics_port: int

    def steady_pods(self) -> list[dict[str, Any]] | None:
        return self.observer.steady_pods()

    def revisions(self, pods: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
        return {
            pod["metadata"]["name"]: pod_revision(pod["status"]["podIP"], self.metrics_port)
            for pod in pods
        }


@dataclass(kw_only=True)
class ClusterStage(Stage):
    """The harness's Stage on the cluster: the app's pods are the fleet, the events are what
    people and Kubernetes do to them (make rollout, scale, evict, kill)."""

    cluster: LocalCluster
    app: App
    observer: Observer
    run: LoadRun
    log_dir: Path
    killed: dict[str, float] = field(default_factory=dict)  # pod -> when its SIGKILL went
    fleet: Fleet = field(init=False)
    clock: Callable[[], float] = field(init=False)
    steady_seconds: float = STEADY_SECONDS
    settle_timeout: float = SETTLE_TIMEOUT_SECONDS
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS

    def __post_init__(self) -> None:
        self.fleet = ClusterFleet(self.observer, self.app.metrics_port)
        self.clock = self.run.elapsed

    def kubectl(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("--namespace", self.app.namespace, *args, **options)

    def make(self, target: str, **variables: str) -> str:
        output = self.cluster.make(target, **variables).stdout
        with (self.log_dir / "make.log").open("a") as make_log:
            make_log.write(f"--- make {target} {variables}\n{output}")
        return output

    def wait_gone(self, pods: set[str]) -> None:
        self.wait(lambda: pods.isdisjoint(self.observer.live_pods()), f"{sorted(pods)} gone")

    # --- the events ------------------------------------------------------------------

    def roll(self, image_ref: str, what: str) -> Act:
        """`make rollout IMAGE_REF=...`: the deploy flow rolls to that build, or restarts
        its pods when it runs already, and waits for the rollout."""

        def act(before: Sequence[dict[str, Any]]) -> None:
            self.event(f"make rollout ({what})")
            self.make("rollout", IMAGE_REF=image_ref)
            self.event("rollout complete")
            self.wait_gone({pod["metadata"]["name"] for pod in before})

        return act

    def failed_since(self, start: float) -> int:
        return sum(
            1 for record in list(self.run.records) if record.intended >= start and not record.ok
        )

    def restart_without_drain(self, image_ref: str) -> Act:
        def act(before: Sequence[dict[str, Any]]) -> None:
            for attempt in range(1, CONTROL_RESTARTS + 1):
                pods = before if attempt == 1 else self.wait_steady()
                self.roll(image_ref, f"restart {attempt}, no drain")(pods)
                failed = self.failed_since(self.current.event_start)
                if failed:
                    log(f"{self.run.elapsed():7.1f} s  {failed} failed without the drain")
                    return
                log(f"{self.run.elapsed():7.1f} s  no failed request yet")

        return act

    def scale_down(self, before: Sequence[dict[str, Any]]) -> None:
        replicas = len(before)
        self.event(f"kubectl scale --replicas={replicas - 1}")
        self.kubectl("scale", f"deployment/{self.app.deployment}", f"--replicas={replicas - 1}")
        (victim,) = self.wait(
            lambda: [
                name
                for name, pod in self.observer.live_pods().items()
                if "deletionTimestamp" in pod["metadata"]
            ],
            "a pod terminating",
        )
        self.wait_gone({victim})
        # The HPA raises a count below its minReplicas at its next sync; scaling back is
        # what it does, done here at once so the scenario does not wait for its period.
        self.event(f"kubectl scale --replicas={replicas}")
        self.kubectl("scale", f"deployment/{self.app.deployment}", f"--replicas={replicas}")
        # Until the watch shows the new count, the old one would look steady.
        self.wait(lambda: self.observer.replicas() == replicas, f"{replicas} replicas wanted")

    def evict(self, pod: str) -> tuple[int, str]:
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": self.app.namespace},
        }
        result = self.cluster.kubectl(
            "create",
            "--raw",
            f"/api/v1/namespaces/{self.app.namespace}/pods/{pod}/eviction",
            "-f",
            "-",
            input=json.dumps(eviction),
            check=False,
        )
        return result.returncode, (result.stdout + result.stderr).strip()

    def eviction(self, before: Sequence[dict[str, Any]]) -> None:
        def allowed() -> bool:
            pdb = self.cluster.get_json(
                "poddisruptionbudget", self.app.deployment, "--namespace", self.app.namespace
            )
            return pdb.get("status", {}).get("disruptionsAllowed") == 1

        self.cluster.wait_for(allowed, PDB_WAIT_SECONDS, "the PDB allowing one disruption")
        first, second = (pod["metadata"]["name"] for pod in before[:2])
        self.event(f"evict {short(first)}")
        code, output = self.evict(first)
        if code != 0:
            raise ClusterError(f"the eviction of {first} was refused: {output}")
        code, output = self.evict(second)
        held = code != 0 and PDB_REFUSAL in output
        self.event(f"evict {short(second)}: {'refused by the PDB' if held else 'NOT refused'}")
        self.rehearsal.checks.append(
            Gate(
                "the PDB refused a second eviction while one pod was down",
                held,
                output.splitlines()[-1][:160] if output else f"exit {code}",
            )
        )
        self.wait_gone({first})

    def force_delete(self, before: Sequence[dict[str, Any]]) -> None:
        victim = before[0]["metadata"]["name"]
        self.event(f"delete {short(victim)} --grace-period=0 --force")
        self.kubectl("delete", "pod", victim, "--grace-period=0", "--force", "--wait=false")
        self.wait_gone({victim})

    def kill_container(self, before: Sequence[dict[str, Any]]) -> None:
        pod = before[0]
        victim = pod["metadata"]["name"]
        restarts = restart_count(pod)
        (status,) = pod["status"]["containerStatuses"]
        pid = self.cluster.task_pid(status["containerID"])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"user_hasher" not in command:
            raise ClusterError(f"pid {pid} of {victim} runs {command!r}, not the app")
        os.kill(pid, signal.SIGKILL)
        self.killed[victim] = self.run.elapsed()
        self.event(f"SIGKILL {short(victim)} (pid {pid} on this node)")
        self.wait(
            lambda: restart_count(self.observer.live_pods().get(victim, {})) > restarts,
            f"{victim} restarted",
        )
        self.event(f"{short(victim)} restarted by the kubelet")

    def drain_off(self, before: Sequence[dict[str, Any]]) -> None:
        self.event("kubectl set env DRAIN_SECONDS=0")
        self.kubectl("set", "env", f"deployment/{self.app.deployment}", "DRAIN_SECONDS=0")
        self.kubectl(
            "rollout", "status", f"deployment/{self.app.deployment}", "--timeout=300s", timeout=360
        )
        self.event("rollout complete")
        self.wait_gone({pod["metadata"]["name"] for pod in before})

    # --- after the run ---------------------------------------------------------------

    def record_terminations(self) -> None:
        """Per scenario, each pod stopped in its event window: SIGTERM (or SIGKILL) to
        its endpoint turning not ready, and both as events."""
        origin, started_at = self.run.origin, self.rehearsal.started_at
        deletions = deletion_seen(self.observer.pods.snapshot())
        draining = self.observer.draining_times()
        readiness = {
            pod: [(at - origin, ready) for at, ready in changes]
            for pod, changes in endpoint_readiness(self.observer.slices.snapshot()).items()
        }
        for scenario in self.rehearsal.scenarios:
            stopped: dict[str, tuple[float | None, float]] = {}  # pod -> (signal, not before)
            for pod, (arrived, accepted) in deletions.items():
                if scenario.event_start <= arrived - origin < scenario.end:
                    sigterm = draining.get(pod)
                    signalled = None if sigterm is None else sigterm - started_at
                    # accepted is whole seconds, cut down: never after the real moment.
                    stopped[pod] = (signalled, accepted - started_at)
            killed = {
                pod: at
                for pod, at in self.killed.items()
                if scenario.event_start <= at < scenario.end
            }
            for pod, at in killed.items():
                stopped[pod] = (at, at)
            for pod, (signalled, not_before) in sorted(stopped.items()):
                not_ready = turned_not_ready(readiness.get(pod, []), not_before)
                if signalled is not None and pod not in killed:
                    scenario.events.append(Event(signalled, f"SIGTERM {short(pod)}", pod))
                if not_ready is not None:
                    scenario.events.append(Event(not_ready, f"{short(pod)} not ready", pod))
                scenario.sigterm_to_not_ready[pod] = (
                    None if signalled is None or not_ready is None else not_ready - signalled
                )
            scenario.events.sort(key=lambda event: event.at)


@dataclass(frozen=True)
class ServiceLoad:
    """The load of a cluster rehearsal: an open loop (both client kinds) through the
    Service's ClusterIP, at a share of the saturation measured there first."""

    cluster_ip: str
    target: Target
    saturation: float
    rate: float

    @classmethod
    def measured(
        cls, cluster: LocalCluster, app: App, rate_cap: float | None = None
    ) -> ServiceLoad:
        service = cluster.get_json("service", app.service, "--namespace", app.namespace)
        cluster_ip = service["spec"]["clusterIP"]
        target = Target(cluster_ip, app.service_port, app.salt)
        saturation = measure_saturation(
            target, SATURATION_CONNECTIONS, SATURATION_SECONDS, keep_alive_share=KEEP_ALIVE_SHARE
        )
        if saturation.errors or not saturation.requests:
            raise ClusterError(f"the saturation probe through the Service failed: {saturation}")
        rate = saturation.rate * RATE_SHARE_OF_SATURATION
        rate = rate if rate_cap is None else min(rate, rate_cap)
        log(f"saturation through {cluster_ip}:{app.service_port}: {saturation.rate:,.0f} req/s")
        return cls(cluster_ip, target, saturation.rate, rate)

    def plan(self, bound_seconds: float) -> LoadPlan:
        """Bounded in time and count: it stops by itself if nobody stops it."""
        return LoadPlan(
            rate=self.rate,
            duration=bound_seconds,
            max_requests=math.ceil(self.rate * bound_seconds),
            keep_alive_share=KEEP_ALIVE_SHARE,
        )

    def rehearsal(
        self,
        app: App,
        run: LoadRun,
        min_rollout_requests: int,
        where: str = "",
        negative_control_required: bool = True,
    ) -> Rehearsal:
        """The Rehearsal that records this load's run (`where`: more about the cluster)."""
        return Rehearsal(
            target=(
                f"Service {app.namespace}/{app.service} ClusterIP "
                f"{self.cluster_ip}:{app.service_port} (kube-proxy){where}"
            ),
            rate=self.rate,
            saturation=self.saturation,
            started_at=time.time() - run.elapsed(),
            min_rollout_requests=min_rollout_requests,
            not_ready_source=NOT_READY_SOURCE,
            negative_control_required=negative_control_required,
        )


def _rehearse(cluster: LocalCluster, log_dir: Path) -> Rehearsal:
    app = App.from_manifest()
    log("deploying this build (make minikube-deploy)")
    cluster.make("minikube-deploy")
    observer = Observer(
        cluster, app.namespace, app.deployment, app.pod_selector, app.service, log_dir
    )
    try:
        pods = cluster.wait_for(observer.steady_pods, SETTLE_TIMEOUT_SECONDS, "the app steady")
        current_ref = app_container(
            cluster.get_json("deployment", app.deployment, "--namespace", app.namespace)
        )["image"]
        (old_revision,) = pod_revision(pods[0]["status"]["podIP"], app.metrics_port)
        new_revision = f"{old_revision}-{NEW_REVISION_SUFFIX}"
        new_ref = build_new_revision(current_ref, new_revision)
        seconds = cluster.import_image(new_ref)
        log(f"new build {new_ref} (APP_REVISION={new_revision}) in the node in {seconds:.1f} s")

        load = ServiceLoad.measured(cluster, app)
        with LoadRun(load.target, load.plan(LOAD_BOUND_SECONDS)) as run:
            rehearsal = load.rehearsal(app, run, MIN_ROLLOUT_REQUESTS)
            stage = ClusterStage(
                cluster=cluster,
                app=app,
                observer=observer,
                run=run,
                rehearsal=rehearsal,
                log_dir=log_dir,
            )
            log(f"load: {load.rate:,.0f} req/s open loop, both client kinds")
            stage.scenario("rollout restart", Role.ROLLOUT, stage.roll(current_ref, "restart"))
            revisions = stage.scenario(
                "rollout new build", Role.ROLLOUT, stage.roll(new_ref, f"to {new_revision}")
            )
            rehearsal.checks.append(
                Gate(
                    f"every pod reports revision {new_revision} after the new build's rollout",
                    all(found == [new_revision] for found in revisions.values()),
                    f"/metrics build_info revision per pod: {revisions}",
                )
            )
            stage.scenario("scale 3 -> 2", Role.DISRUPTION, stage.scale_down)
            stage.scenario("eviction", Role.DISRUPTION, stage.eviction)
            stage.scenario("force delete", Role.FAULT, stage.force_delete)
            stage.scenario("SIGKILL", Role.FAULT, stage.kill_container)
            stage.scenario("rollout DRAIN_SECONDS=0", Role.ROLLOUT, stage.drain_off)
            stage.scenario(
                "restart without drain",
                Role.NEGATIVE_CONTROL,
                stage.restart_without_drain(new_ref),
            )
            # Nothing is scheduled after this: the last scenario ends where the load does.
            rehearsal.scenarios[-1].end = run.elapsed()
        rehearsal.records = run.records
        stage.record_terminations()
        return rehearsal
    finally:
        observer.stop()


def _redeploy(cluster: LocalCluster, check: bool) -> None:
    """The rehearsal leaves another build running without its drain: back to this build
    as `make minikube-deploy` deploys it."""
    log("deploying this build again (make minikube-deploy)")
    result = cluster.make("minikube-deploy", check=check)
    if result.returncode != 0:
        log(f"make minikube-deploy exited {result.returncode}:\n{result.stdout[-2000:]}")


def rehearse_on_cluster(out: Path, attach: bool) -> Rehearsal:
    """With attach, on the running cluster that $KC_STATE names (left running, the app
    deployed again from this build afterwards); otherwise on a cluster of its own, started
    with NetworkPolicy enforced and stopped at the end whatever happens."""
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if attach:
        cluster = LocalCluster.attach()
        try:
            rehearsal = _rehearse(cluster, log_dir)
        except BaseException:
            _redeploy(cluster, check=False)
            raise
        _redeploy(cluster, check=True)
        return rehearsal
    problem = bundle_problem(netpol=True) or engine_problem()
    if problem is not None:
        raise SystemExit(f"rehearsal: no local cluster can run here: {problem}")
    log("building the image (make image)")
    image = build_image()
    log(f"starting the local cluster with {image.ref} (NetworkPolicy enforced)")
    with started(images=[image.ref], netpol=True, log=log_dir / "start-cluster.log") as cluster:
        try:
            return _rehearse(cluster, log_dir)
        finally:
            log("stopping the local cluster")
