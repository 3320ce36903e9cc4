"""The service's Prometheus metrics: a dedicated aioprometheus Registry and its families.

Every series carries `app_version`, `pod_ip` and `node_ip` (aioprometheus const
labels, added when rendering), so a query can tell versions apart during a rolling
deploy and find the pod and node behind a spike.
"""

from aioprometheus import Counter, Gauge, Histogram, Registry
from aioprometheus.histogram import Histogram as BucketCounts

from user_hasher.settings import Settings

# Upper bounds in seconds, from the request reaching the app to the end of its
# response. A /user_hash request spends about 0.15 ms there on an idle pod (bench/),
# so the first bucket holds normal traffic and the next ones resolve the queueing
# that comes first under load; 5 s is the scale of a stuck pod, and anything slower
# only needs to be seen (+Inf).
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

RESPONSE_LABELS = ("method", "route", "status_class")
ResponseKey = tuple[str, str, str]  # values of RESPONSE_LABELS, in that order


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


class Metrics:
    """Owns the registry; the response recorder and the hashing handler report through it."""

    def __init__(self, settings: Settings) -> None:
        self.registry = Registry()
        labels = identity_labels(settings)
        self.request_duration = Histogram(
            "user_hasher_http_request_duration_seconds",
            "Time from a request reaching the app to the end of its response.",
            const_labels=labels,
            registry=self.registry,
            buckets=DURATION_BUCKETS_SECONDS,
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
        self.build_info = Gauge(
            "user_hasher_build_info",
            "Always 1; its labels say which version runs on which pod and node.",
            const_labels=labels,
            registry=self.registry,
        )
        self.build_info.set({}, 1)
        # Present from the first scrape, so rate() sees the first hash too.
        self.hashes_generated.set({}, 0)
        # One entry per response series ever seen (bounded: the recorder only
        # reports bounded label values). Holding each series' bucket counts lets the
        # hot path skip aioprometheus's per-call label-dict serialisation.
        self._durations: dict[ResponseKey, BucketCounts] = {}
        self._labels: dict[ResponseKey, dict[str, str]] = {}

    def count_hash(self) -> None:
        self.hashes_generated.inc({})

    def observe_response(self, key: ResponseKey, seconds: float) -> None:
        durations = self._durations.get(key)
        if durations is not None:
            durations.observe(seconds)
            return
        labels = dict(zip(RESPONSE_LABELS, key, strict=True))
        self.request_duration.observe(labels, seconds)
        self._durations[key] = self.request_duration.get_value(labels)
        self._labels[key] = labels

    def refresh(self) -> None:
        """Brings series derived at scrape time up to date; call before rendering.

        The responses counter is the duration histogram's count under the name the
        brief asks for: copying it here keeps the two equal by construction and
        costs the request path nothing.
        """
        for key, durations in self._durations.items():
            self.responses.set(self._labels[key], durations.observations)
