"""Every environment setting the service reads, validated once at startup."""

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from user_hasher import __version__

__all__ = ["TEST_SALT", "Settings", "SettingsError", "load_settings"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# The salt of the published contract example and of the dev Secret: anyone can compute
# every hash made with it.
TEST_SALT = "TESTSALT"


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
