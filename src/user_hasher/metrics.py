"""The service's Prometheus metrics: a dedicated aioprometheus Registry, its families,
the per-response recorder and the rendering of /metrics.

The refusals by reason (user_hasher_shed_total) are counted by admission control, whose
state the service owns (app.py); the metrics only read those counts when rendering.

Every series carries `app_version`, `pod_ip` and `node_ip` (aioprometheus const labels,
added when rendering), so a query can tell versions apart during a rolling deploy and
find the pod and node behind a spike. `user_hasher_build_info` alone also carries the
build's `revision` and the `salt_fingerprint` of the salt the pod serves (hashing.py):
pods that disagree on it answer one user with different hashes. On that one series they
cost a label each; on every series they would only repeat what it says.

Per-response label values are bounded by construction, so no request can create new
series: the route is a known route template or "unmatched", a method outside RFC 9110's
set is "other", and a status becomes its class.
"""

import bisect
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import aioprometheus
from aioprometheus import Counter, Gauge, Histogram, Registry
from aioprometheus.histogram import Histogram as BucketCounts

from user_hasher.admission import REASONS
from user_hasher.hashing import salt_fingerprint
from user_hasher.settings import Settings

# Upper bounds in seconds, from a request reaching the app to the end of its response.
# An idle pod answers /user_hash within the first bucket (docs/capacity.md), the next
# ones resolve the queueing that comes first under load, 5 s is the scale of a stuck
# pod, and anything slower only needs to be seen (+Inf).
DURATION_BUCKETS_SECONDS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

# h11 accepts any token as a method; all but RFC 9110's are one label value.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "other"
RESPONSE_LABELS = ("method", "route", "status_class")
ResponseKey = tuple[str, str, str]  # values of RESPONSE_LABELS, in that order

_STATUS_CLASSES = {2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
# The shed counts of a service that refuses nothing: every reason, at 0.
NOTHING_SHED: Mapping[str, int] = MappingProxyType(dict.fromkeys(REASONS, 0))


def status_class(status: int) -> str:
    # A 1xx never ends an exchange and a status outside 100-599 is a server bug:
    # either way the client got no proper answer, which is what 5xx counts.
    return _STATUS_CLASSES.get(status // 100, "5xx")


def escape_label_value(value: str) -> str:
    """Escapes as the text exposition format requires; aioprometheus writes values raw,
    and these come from the environment, where a quote would corrupt every line."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def identity_labels(settings: Settings) -> dict[str, str]:
    return {
        "app_version": escape_label_value(settings.APP_VERSION),
        "pod_ip": escape_label_value(settings.POD_IP),
        "node_ip": escape_label_value(settings.NODE_IP),
    }


def build_labels(settings: Settings) -> dict[str, str]:
    return {
        "revision": escape_label_value(settings.APP_REVISION),
        "salt_fingerprint": salt_fingerprint(settings.USER_SALT),
    }


class Metrics:
    def __init__(self, settings: Settings, shed_counts: Mapping[str, int] = NOTHING_SHED) -> None:
        self.registry = Registry()
        labels = identity_labels(settings)
        # Its series are written whole at scrape time, with DURATION_BUCKETS_SECONDS
        # (ResponseDurations.as_histogram): the collector's own bounds are never used.
        self.request_duration = Histogram(
            "user_hasher_http_request_duration_seconds",
            "Time from a request reaching the app to the end of its response.",
            const_labels=labels,
            registry=self.registry,
        )
        self.responses = Counter(
            "user_hasher_http_responses_total",
            "HTTP responses sent, by method, route and status class.",
            const_labels=labels,
            registry=self.registry,
        )
        self.hashes_generated = Counter(
            "user_hasher_hashes_generated_total",
            "User hashes computed and returned.",
            const_labels=labels,
            registry=self.registry,
        )
        build_info = Gauge(
            "user_hasher_build_info",
            "Always 1; its labels say which build runs on which pod and node, with which salt.",
            const_labels=labels,
            registry=self.registry,
        )
        build_info.set(build_labels(settings), 1)
        self.shed = Counter(
            "user_hasher_shed_total",
            "Requests and connections refused with a 503 to protect the pod, by reason.",
            const_labels=labels,
            registry=self.registry,
        )
        # The refusals by reason (Admission.shed): counted by admission control, read here
        # at every scrape, never written.
        self._shed_counts = shed_counts
        # The request path only counts, in plain Python objects; aioprometheus's
        # collectors, which serialise their label dicts on every call, are brought up
        # to date when Prometheus scrapes (render). Bounded: the keys are bounded values.
        self._hashes = 0
        self._durations: dict[ResponseKey, ResponseDurations] = {}

    def count_hash(self) -> None:
        self._hashes += 1

    def observe_response(
        self, scope: Mapping[str, Any], route: str, status: int, seconds: float
    ) -> None:
        """A response observer (see asgi.py)."""
        method = scope["method"]
        key = (
            method if method in KNOWN_METHODS else OTHER_METHOD,
            route,
            status_class(status),
        )
        durations = self._durations.get(key)
        if durations is None:
            durations = self._durations[key] = ResponseDurations(key)
        durations.observe(seconds)

    def render(self, accept_headers: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        """The /metrics body and its headers, in the format the Accept headers ask for."""
        self.hashes_generated.set({}, self._hashes)
        for reason in REASONS:  # every reason from the start, so rate() sees the first
            self.shed.set({"reason": reason}, self._shed_counts[reason])
        for durations in self._durations.values():
            histogram = durations.as_histogram()
            self.request_duration.set_value(durations.labels, histogram)
            # The responses counter is the histogram's count under the name dashboards
            # expect: equal by construction.
            self.responses.set(durations.labels, histogram.observations)
        return aioprometheus.render(self.registry, accept_headers)


class ResponseDurations:
    """The durations of one response series: how many fell in each bucket (a bound is
    in its own bucket, as `le` says), and their sum."""

    __slots__ = ("labels", "per_bucket", "sum")

    def __init__(self, key: ResponseKey) -> None:
        self.labels = dict(zip(RESPONSE_LABELS, key, strict=True))
        self.per_bucket = [0] * (len(DURATION_BUCKETS_SECONDS) + 1)  # the last one: +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.per_bucket[bisect.bisect_left(DURATION_BUCKETS_SECONDS, seconds)] += 1
        self.sum += seconds

    def as_histogram(self) -> BucketCounts:
        """As aioprometheus exposes a histogram: cumulative counts per upper bound."""
        histogram = BucketCounts(*DURATION_BUCKETS_SECONDS)
        below = 0
        for index, bound in enumerate(list(histogram.buckets)):
            below += self.per_bucket[index]
            histogram.buckets[bound] = below
        histogram.observations = below
        histogram.sum = self.sum
        return histogram
