"""Server processes pinned to one core, and wrk pinned to the other.

The server gets CPU 0 and every load generator CPU 1, so the two never compete for a
core; what each server spends is read from /proc (user + system CPU, resident memory).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proving.contract import CONTRACT_TARGET
from proving.service import SERVICE_MODULE, ServiceProcess

SERVER_CPU, LOAD_CPU = 0, 1
READY_TIMEOUT_SECONDS = 30.0
# Start-to-ready is one of the numbers measured: poll finely.
READY_POLL_SECONDS = 0.005
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Enough file descriptors for the idle-connection run on both sides of loopback.
OPEN_FILES = 65_536
TARGET = CONTRACT_TARGET


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


class Server(ServiceProcess):
    """`python -m user_hasher` (variant None) or `python -m bench.servers VARIANT`, on
    SERVER_CPU, its output in a temporary file; what it spends is read from /proc."""

    def __init__(self, name: str, variant: str | None, env: dict[str, str]) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115
        super().__init__(
            Path(self._log.name),
            env,
            prefix=["taskset", "-c", str(SERVER_CPU)],
            module=SERVICE_MODULE if variant is None else ["-m", "bench.servers", variant],
            # The bare servers have no /readyz: they are ready when they answer the target.
            ready_target=TARGET if variant in ("raw", "quart") else "/readyz",
            preexec_fn=raise_open_files_limit,
        )

    @property
    def url(self) -> str:
        return self.base_url

    def start(self) -> Server:
        """Starts the process; returns once it answers its ready target."""
        super().start()
        self.wait_ready(READY_TIMEOUT_SECONDS, interval=READY_POLL_SECONDS)
        return self

    def _stat(self) -> list[str]:
        # The pid is taskset's until it execs python: the same process, same /proc entry.
        text = Path(f"/proc/{self.pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        fields = self._stat()  # fields[11] and [12] are utime and stime (man 5 proc)
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND

    def rss_mib(self) -> float:
        return int(self._stat()[21]) * PAGE_SIZE / 2**20

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> float:  # type: ignore[override]
        """Sends `sig`, waits for the exit; returns the seconds it took."""
        if self.process is None:
            return 0.0
        seconds = self.stop_by(sig, timeout)
        self._log.close()
        return seconds


class CpuLimit:
    """A share of a core for the server processes put in it, as a pod's CPU limit gives one:
    a CFS quota in a cgroup of its own (v1 `cpu` hierarchy or v2), removed on exit.

    The period is 10 ms, not the kubelet's 100 ms: the share is the same, but a throttled
    server pauses for at most a few milliseconds, so the latencies measured are the
    server's, not the throttle's. Needs root and a writable cgroup file system; where there
    is none, `problem` says why and nothing is limited."""

    PERIOD_US = 10_000
    V1_ROOT = Path("/sys/fs/cgroup/cpu")
    V2_ROOT = Path("/sys/fs/cgroup")

    def __init__(self, cores: float, name: str = "user-hasher-bench") -> None:
        self.cores = cores
        self.quota_us = max(1000, round(cores * self.PERIOD_US))
        self.problem: str | None = None
        if (self.V1_ROOT / "cpu.cfs_quota_us").exists():
            self.group, self.v1 = self.V1_ROOT / name, True
        else:
            self.group, self.v1 = self.V2_ROOT / name, False

    def __enter__(self) -> CpuLimit:
        try:
            self.group.mkdir(exist_ok=True)
            if self.v1:
                (self.group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (self.group / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            else:
                (self.group / "cpu.max").write_text(f"{self.quota_us} {self.PERIOD_US}")
        except OSError as error:
            self.problem = f"no CPU limit ({error.strerror}: {error.filename})"
        return self

    def add(self, pid: int) -> None:
        if self.problem is None:
            (self.group / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *_: object) -> None:
        if self.problem is None:
            # Whatever is left in it (nothing, once its servers stopped) goes back to the root.
            for pid in (self.group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.group.parent / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                self.group.rmdir()


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


_SCRIPT_UNKNOWN_PATHS = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/unknown/" .. counter)
end
"""


def wrk_command(url: str, seconds: float, connections: int = 32) -> list[str]:
    """Closed-loop load: `connections` keep-alive connections, each sending its next
    request as soon as the last one is answered, for `seconds`."""
    return [
        "taskset",
        "-c",
        str(LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        url,
    ]


def wrk(url: str, seconds: float, connections: int = 32, unknown_paths: bool = False) -> WrkResult:
    """Runs wrk_command to its end and reads its totals."""
    argv = wrk_command(url, seconds, connections)[:-1]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if unknown_paths:
            script.write(_SCRIPT_UNKNOWN_PATHS)
            script.flush()
            argv += ["-s", script.name]
        result = subprocess.run(
            [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", result.stdout)
    if found is None:
        raise WrkError(f"wrk printed no totals:\n{result.stdout}")
    requests, elapsed, unit = int(found[1]), float(found[2]), found[3]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", result.stdout))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if non_2xx and not unknown_paths:
        errors += int(non_2xx[1])
    return WrkResult(requests, elapsed / 1000 if unit == "ms" else elapsed, errors)
