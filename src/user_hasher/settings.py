"""Every environment setting the service reads, validated once at startup."""

from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from user_hasher import __version__

__all__ = ["TEST_SALT", "Settings", "SettingsError", "load_settings"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The salt of the published contract example and of the dev Secret: anyone can compute
# every hash made with it.
TEST_SALT = "TESTSALT"

# Requests in flight per core of CPU that admission control lets in while saturated: one
# core serves ~1,400 req/s, ~0.7 ms each, so 48 at once wait ~34 ms for it, under the
# 50 ms goal with room for the loop's own work; 32 keep-alive connections already
# saturate it. A pod limited to a quarter of a core serves each in ~2.9 ms: 12.
IN_FLIGHT_PER_CORE = 48
# However small the CPU limit: a few at once keep the core busy between reads and writes.
MIN_IN_FLIGHT = 4


class Settings(BaseSettings):
    # No prefix: USER_SALT is the name the contract gives the salt, and the Deployment
    # sets the others under these plain names.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True)

    HOST: str = "0.0.0.0"  # a pod must listen on its own IP, not loopback
    PORT: int = Field(default=8000, ge=1, le=65535)
    # /metrics is served here and only here, by the same process: the NetworkPolicy can then
    # admit scrapes from the monitoring namespace alone while clients reach PORT from
    # anywhere. 9797: in the range exporters use (9100-9999), and not Prometheus' own 9090,
    # which a developer running Prometheus beside `make run` would already have taken.
    METRICS_PORT: int = Field(default=9797, ge=1, le=65535)
    # On where a real salt must be served: the service then refuses to start with an empty
    # salt or the test salt. Declared before USER_SALT, whose check reads it.
    REQUIRE_SALT: bool = False
    # SecretStr keeps the salt out of repr(), logs and validation errors.
    USER_SALT: SecretStr = SecretStr("")
    APP_VERSION: str = Field(default=__version__, min_length=1)
    # The build's unique reference (its commit or image digest): two builds of one version
    # are told apart by it.
    APP_REVISION: str = Field(default="unknown", min_length=1)
    POD_IP: str = Field(default="unknown", min_length=1)
    NODE_IP: str = Field(default="unknown", min_length=1)
    # How long a terminating pod keeps serving after it turns unready, so that
    # Kubernetes can take it out of the Service endpoints before it stops listening.
    DRAIN_SECONDS: float = Field(default=5.0, ge=0, le=300)
    # How long in-flight requests get to finish once the listener has closed.
    GRACEFUL_TIMEOUT_SECONDS: float = Field(default=10.0, ge=0, le=300)
    LOG_LEVEL: LogLevel = "INFO"
    # A successful request is access-logged at INFO only when it took at least this long
    # (errors always are; LOG_LEVEL=DEBUG logs every request).
    SLOW_REQUEST_SECONDS: float = Field(default=0.25, ge=0, le=300)
    # Admission control (admission.py, connections.py; docs/capacity.md#overload): past
    # saturation the excess is refused with a 503 at once instead of queued. Off only to
    # measure the service without it.
    SHED_LOAD: bool = True
    # Requests served at once while saturated; past it new connections are refused at
    # accept (over HTTP/1.1 a connection carries one request at a time) and requests shed.
    # Unset: IN_FLIGHT_PER_CORE for each core of CPU_LIMIT_MILLICORES (one core at most:
    # one event loop uses no more), so that the wait for the CPU stays ~35 ms whatever the
    # pod's limit (docs/capacity.md#overload).
    MAX_IN_FLIGHT: int | None = Field(default=None, ge=1, le=100_000)
    # The container's CPU limit, which the Deployment passes from the downward API
    # (limits.cpu in millicores); unset outside Kubernetes: one core.
    CPU_LIMIT_MILLICORES: int = Field(default=1000, ge=1, le=1_000_000)
    # The event loop's lag (smoothed over ~100 ms) above which it is saturated, and the
    # bound above applies. An idle or coping loop runs its timers within a millisecond;
    # a saturated one only after every ready callback, ~5-15 ms with tens of busy
    # connections (docs/capacity.md#overload).
    SATURATED_LAG_SECONDS: float = Field(default=0.005, gt=0, le=10)
    # Open connections; new ones past this are refused. What the memory limit holds with
    # room to spare: 256 MiB limit - ~60 MiB working set, at ~30 KiB a busy connection
    # (~7.6 KiB idle) 2,048 take ~60 MiB (docs/capacity.md#sizing).
    MAX_CONNECTIONS: int = Field(default=2048, ge=1, le=1_000_000)
    # Peers never refused at accept, besides NODE_IP (the kubelet probes from the node):
    # comma-separated addresses, loopback by default (a local health check, port-forward).
    SHED_EXEMPT_ADDRESSES: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.1", "::1")

    @field_validator("METRICS_PORT")
    @classmethod
    def _metrics_on_a_port_of_its_own(cls, port: int, info: ValidationInfo) -> int:
        if port == info.data.get("PORT"):
            raise PydanticCustomError("port_shared", "must differ from PORT")
        return port

    @field_validator("USER_SALT")
    @classmethod
    def _refuse_a_known_salt_when_required(cls, salt: SecretStr, info: ValidationInfo) -> SecretStr:
        # Stripped: a Secret written with `echo` ends in a newline, and is still the test salt.
        if info.data.get("REQUIRE_SALT") and salt.get_secret_value().strip() in ("", TEST_SALT):
            raise PydanticCustomError(
                "salt_required", "must be set, and not to the test salt, when REQUIRE_SALT is true"
            )
        return salt

    @field_validator("SHED_EXEMPT_ADDRESSES", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def in_flight_bound(self) -> int:
        """MAX_IN_FLIGHT, or derived from the CPU limit: what the pod's share of a core
        serves within ~35 ms."""
        if self.MAX_IN_FLIGHT is not None:
            return self.MAX_IN_FLIGHT
        cores = min(self.CPU_LIMIT_MILLICORES, 1000) / 1000
        return max(MIN_IN_FLIGHT, round(IN_FLIGHT_PER_CORE * cores))

    @property
    def salt_is_set(self) -> bool:
        return bool(self.USER_SALT.get_secret_value())


class SettingsError(Exception):
    """A setting has a bad value; the message names the variable but never echoes secrets."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors(include_input=False, include_url=False)
        )
        raise SettingsError(f"invalid environment settings: {problems}") from None
