"""`make rollout-check`: zero downtime checked from inside a real cluster.

The project's open-loop load generator runs as a Kubernetes Job (rollout-check-job.yaml)
in the app's namespace and sends requests to the Service by its DNS name, both client
kinds at once, while this script runs `kubectl rollout restart` on the Deployment and
waits for it (or, with --node, cordons and drains that node, as an upgrade does, then
uncordons it: the load Job is kept off that node). Then it reads every request's record
from the Job's log and prints the rehearsal's summary; exit 1 when a request failed or the
check proved nothing.

Only kubectl is needed (context --context, minikube by default): it works on any cluster
where the app is deployed, and needs no root. With NetworkPolicy enforced (minikube:
`minikube start --cni=calico`) it also proves the policy admits clients in the cluster.
Run it from the repository root: the ConfigMap it creates holds rehearsal/in_cluster_load.py
and proving/openloop.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proving.kubectl import Kubectl, KubectlError
from proving.openloop import Client, Error, RequestRecord, summarize
from proving.steady import steady_pods
from proving.waiting import WaitTimeoutError, wait_for
from rehearsal.report import (
    MIN_REQUESTS_PER_CLIENT,
    Gate,
    Rehearsal,
    Role,
    scenario_rows,
    scenario_summary,
    write_summary,
)
from rehearsal.stage import Stage

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
JOB_MANIFEST = HERE / "rollout-check-job.yaml"
# The files the Job's pod runs, under the names it imports them by.
LOAD_FILES = {
    "in_cluster_load.py": HERE / "in_cluster_load.py",
    "openloop.py": REPO_ROOT / "proving" / "openloop.py",
}
# From applying the Job to its first line: a pod start, and a first image load at worst.
START_TIMEOUT_SECONDS = 180.0
# Load after the rollout completed: the last old pod's drain (DRAIN_SECONDS) and exit.
TAIL_SECONDS = 10.0
# After the load's last intended start: the generator's request timeout, and its output.
FINISH_SECONDS = 60.0
# The failed requests listed in the summary, each with the address it was sent from.
LISTED_FAILURES = 100


class CheckError(RuntimeError):
    pass


NODE_WARNING = (
    "rollout-check: WARNING: --node {node} cordons and drains node {node} of context "
    "{context}: every pod on it is evicted (the app's and any other's), then the node is "
    "uncordoned. Run it only on a cluster where that is acceptable."
)


def job_manifest(
    image: str,
    name: str,
    host: str,
    port: int,
    rate: float,
    seconds: float,
    avoid_node: str | None = None,
) -> str:
    job = yaml.safe_load(JOB_MANIFEST.read_text())
    job["metadata"]["name"] = name
    job["spec"]["activeDeadlineSeconds"] = int(START_TIMEOUT_SECONDS + seconds + FINISH_SECONDS)
    pod = job["spec"]["template"]["spec"]
    pod["volumes"][0]["configMap"]["name"] = name
    (container,) = pod["containers"]
    container["image"] = image
    container["args"] = [f"--{k}={v}" for k, v in (("host", host), ("port", port))]
    container["args"] += [f"--rate={rate}", f"--seconds={seconds}"]
    if avoid_node:
        # The client must not be evicted by the drain it watches.
        term = {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [avoid_node]}
            ]
        }
        pod["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    return json.dumps(job)


def parse_log(log: str) -> tuple[float, list[RequestRecord]]:
    """The Job's output: (epoch seconds at zero on the records' clock, the records)."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith(("{", "["))]
    if not lines or "started_at" not in lines[0]:
        raise CheckError(f"the load Job's log does not start with started_at: {log[:500]!r}")
    rows = [line for line in lines if isinstance(line, list)]
    if lines[-1] != {"records": len(rows)}:
        raise CheckError(f"the load Job's log ends early: {len(rows)} records, then {lines[-1]}")
    records = [
        RequestRecord(
            intended,
            latency,
            Client(client),
            status,
            None if error is None else Error(error),
            detail,
            wait=wait,
            source=source,
        )
        for intended, latency, client, status, error, wait, detail, source in rows
    ]
    return lines[0]["started_at"], records


def failure_rows(records: list[RequestRecord]) -> list[dict[str, Any]]:
    """The first LISTED_FAILURES failed requests: when, which client kind, what went wrong,
    and the address the request's connection left from (to find its packets)."""
    return [
        {
            "intended_s": record.intended,
            "client": str(record.client),
            "error": str(record.error),
            "source": record.source,
            "detail": record.detail,
        }
        for record in records
        if not record.ok
    ][:LISTED_FAILURES]


class LoadJob:
    """The load Job's life, as a context manager: its ConfigMap (the generator's files) and
    the Job applied, and its first line awaited, on entry; `records` waits for its end and
    reads every request's record from its log; both are deleted on exit, whatever
    happened."""

    def __init__(self, kubectl: Kubectl, name: str, manifest: str) -> None:
        self.kubectl, self.name, self.manifest = kubectl, name, manifest

    def __enter__(self) -> LoadJob:
        kubectl = self.kubectl
        kubectl("delete", "job", self.name, "--ignore-not-found", "--wait=true")
        files = [f"--from-file={name}={path}" for name, path in LOAD_FILES.items()]
        configmap = kubectl("create", "configmap", self.name, *files, "--dry-run=client", "-o=json")
        kubectl("apply", "-f", "-", input=configmap)
        kubectl("apply", "-f", "-", input=self.manifest)
        try:
            wait_for(self.first_line, START_TIMEOUT_SECONDS, "load started")
        except WaitTimeoutError as error:
            description = kubectl("describe", "job", self.name)
            self.__exit__()
            raise CheckError(f"{error}:\n{description}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kubectl("delete", "job", self.name, "--ignore-not-found", "--wait=false")
        self.kubectl("delete", "configmap", self.name, "--ignore-not-found")

    def first_line(self) -> float | None:
        # Not checked: until the pod runs, kubectl logs fails.
        result = self.kubectl.run("logs", f"job/{self.name}", check=False)
        first = result.stdout.partition("\n")[0]
        return json.loads(first)["started_at"] if first.startswith("{") else None

    def finished(self) -> str | None:
        status = self.kubectl.get_json(f"job/{self.name}").get("status", {})
        return (
            "succeeded" if status.get("succeeded") else "failed" if status.get("failed") else None
        )

    def records(self, timeout: float) -> list[RequestRecord]:
        """Waits up to `timeout` s for the Job to end; every request's record from its log."""
        outcome = wait_for(self.finished, timeout, "end of the load Job", interval=1.0)
        log = self.kubectl("logs", f"job/{self.name}", timeout=300)
        if outcome != "succeeded":
            raise CheckError(f"the load Job {outcome}:\n{log[-2000:]}")
        return parse_log(log)[1]


@dataclass(frozen=True)
class DeploymentFleet:
    """The app's Deployment as kubectl shows it (any context, no watches): steady as
    proving.steady says. The builds the pods report are not seen from outside the cluster."""

    kubectl: Kubectl
    deployment: str
    selector: str

    def steady_pods(self) -> list[dict[str, Any]] | None:
        deployment = self.kubectl.get_json(f"deployment/{self.deployment}")
        return steady_pods(deployment, self.kubectl.get_json("pods", "-l", self.selector)["items"])

    def revisions(self, pods: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
        return {}


class RolloutCheck:
    def __init__(self, options: argparse.Namespace) -> None:
        self.o = options
        self.kubectl = Kubectl(options.context, options.namespace)
        self.job = f"{options.deployment}-rollout-check"

    def app_pods(self, selector: str, node: str | None = None) -> set[str]:
        return {
            pod["metadata"]["name"]
            for pod in self.kubectl.get_json("pods", "-l", selector)["items"]
            if node is None or pod["spec"].get("nodeName") == node
        }

    def disrupt(self) -> str:
        """The event under load: a rollout restart, or a drain of --node; waits for the app
        to be fully available again. Returns the event's name."""
        o, kubectl = self.o, self.kubectl
        if not o.node:
            kubectl("rollout", "restart", f"deployment/{o.deployment}")
            kubectl("rollout", "status", f"deployment/{o.deployment}", f"--timeout={o.timeout}s")
            return "kubectl rollout restart"
        # kubectl drain cordons, evicts (the PDB decides; refused evictions are retried
        # every 5 s) and waits for the pods to be gone. The node is uncordoned whatever
        # happens.
        try:
            print(f"rollout-check: draining node {o.node}", file=sys.stderr)
            kubectl(
                "drain",
                o.node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                f"--timeout={o.timeout}s",
                timeout=o.timeout + 60,
            )
        finally:
            kubectl("uncordon", o.node)
        kubectl("rollout", "status", f"deployment/{o.deployment}", f"--timeout={o.timeout}s")
        return f"kubectl drain {o.node}, then uncordon"

    def run(self) -> dict[str, Any]:
        o, kubectl = self.o, self.kubectl
        deployment = kubectl.get_json(f"deployment/{o.deployment}")
        (image,) = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        labels = deployment["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        service = kubectl.get_json(f"service/{o.deployment}")
        port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
        # Fully qualified, with the root dot: resolved as is, no search-path lookups first.
        host = f"{o.deployment}.{o.namespace}.svc.{o.cluster_domain}."
        pods_before = self.app_pods(selector, o.node)

        job = job_manifest(image, self.job, host, port, o.rate, o.seconds, o.node)
        record = Rehearsal(
            target=f"http://{host}:{port} from a pod of Job {self.job}",
            rate=o.rate,
            saturation=None,
            started_at=time.time(),
            min_rollout_requests=0,
            not_ready_source="not observed (kubectl only)",
        )
        with LoadJob(kubectl, self.job, job) as load:
            # This machine's clock only: the node's may differ from it (a minikube VM after a
            # laptop slept). The records' zero is taken as when the first line was seen, at
            # most a poll late, so events sit at most that much early on the records' clock.
            origin = time.monotonic()
            stage = Stage(
                fleet=DeploymentFleet(kubectl, o.deployment, selector),
                clock=lambda: time.monotonic() - origin,
                rehearsal=record,
                steady_seconds=o.steady,
                settle_timeout=o.timeout,
                transient=(KubectlError, subprocess.TimeoutExpired),
                tag="rollout-check",
            )
            if o.node:
                name, role, what = f"drain {o.node}", Role.DISRUPTION, f"kubectl drain {o.node}"
                done = "drained, uncordoned, app available"
            else:
                name, role, what = "rollout restart", Role.ROLLOUT, "kubectl rollout restart"
                done = "rollout complete"

            def disrupt(_: object) -> None:
                stage.event(what, node=o.node)
                self.disrupt()
                stage.event(done, node=o.node)

            stage.scenario(name, role, disrupt)
            (scenario,) = record.scenarios
            restart, complete = (event.at for event in scenario.events)
            print(f"rollout-check: {what}: complete after {complete - restart:.1f} s")
            remaining = max(FINISH_SECONDS, origin + o.seconds + FINISH_SECONDS - time.monotonic())
            records = load.records(remaining)
            pods_after = self.app_pods(selector)
            on_node_after = self.app_pods(selector, o.node) if o.node else set()
        # Nothing is scheduled after it: the scenario ends where the load does.
        scenario.end = o.seconds

        during = summarize(records, restart, o.seconds)
        rolling = summarize(records, restart, complete)
        whole = summarize(records)
        kinds = all(
            during.requests_by_client.get(client, 0) >= MIN_REQUESTS_PER_CLIENT for client in Client
        )
        checks = [
            Gate(
                "0 failed requests",
                whole.failed == 0 and kinds,
                f"{whole.failed:,} of {whole.requests:,} failed; from the restart on "
                f"{during.requests_by_client}, {rolling.requests:,} of them while it rolled",
            ),
            Gate(
                f"the load ran on for {TAIL_SECONDS:.0f} s after the rollout completed",
                o.seconds - complete >= TAIL_SECONDS,
                f"{o.seconds - complete:.1f} s (--seconds {o.seconds:g})",
            ),
            Gate(
                f"every pod on node {o.node} was replaced" if o.node else "every pod was replaced",
                bool(pods_before) and bool(pods_after) and not pods_before & pods_after,
                f"{len(pods_before)} before{f' on {o.node}' if o.node else ''}, "
                f"{len(pods_after)} after, {len(pods_before & pods_after)} kept"
                + (f"; {len(on_node_after)} on {o.node} after the uncordon" if o.node else ""),
            ),
        ]
        return {
            "target": record.target,
            "image": image,
            "rate_per_s": o.rate,
            "requests": whole.requests,
            "failed": whole.failed,
            "node": o.node,
            "rollout_s": round(complete - restart, 3),
            "requests_while_rolling": rolling.requests,
            "scenarios": [scenario_summary(records, scenario)],
            "failures": failure_rows(records),
            "gates": [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in checks],
            "passed": all(g.passed for g in checks),
        }


def human_summary(data: dict[str, Any], output: Path) -> str:
    lines = [
        f"Rollout check against {data['target']}: {data['requests']:,} requests "
        f"at {data['rate_per_s']:g}/s, {data['failed']:,} failed",
        "",
        *scenario_rows(data["scenarios"]),
        "",
        *(
            f"{'PASS' if g['passed'] else 'FAIL'}  {g['name']}: {g['detail']}"
            for g in data["gates"]
        ),
        f"wrote {output}",
        f"RESULT: {'PASS' if data['passed'] else 'FAIL'}",
    ]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.rollout_check", description=__doc__)
    parser.add_argument("--context", default="minikube", help="kubectl context")
    parser.add_argument("--namespace", default="user-hasher")
    parser.add_argument("--deployment", default="user-hasher", help="also the Service's name")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument(
        "--seconds", type=float, default=75.0, help="of load: steady + rollout + 10 s at least"
    )
    parser.add_argument("--steady", type=float, default=10.0, help="seconds before the restart")
    parser.add_argument("--timeout", type=int, default=300, help="for the rollout, seconds")
    parser.add_argument(
        "--node",
        default=None,
        help="drain this node (cordon, evict, uncordon) instead of a rollout restart: "
        "DISRUPTS A REAL NODE",
    )
    parser.add_argument("--out", type=Path, default=Path("build/rollout-check/summary.json"))
    options = parser.parse_args(argv)
    if options.node:
        print(NODE_WARNING.format(node=options.node, context=options.context), file=sys.stderr)
    try:
        data = RolloutCheck(options).run()
    except (CheckError, KubectlError, WaitTimeoutError, subprocess.TimeoutExpired) as error:
        print(f"rollout-check: {error}", file=sys.stderr)
        return 1
    write_summary(data, options.out)
    print(human_summary(data, options.out))
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
