import pytest

from user_hasher import __version__
from user_hasher.settings import (
    IN_FLIGHT_PER_CORE,
    MIN_IN_FLIGHT,
    TEST_SALT,
    Settings,
    SettingsError,
    load_settings,
)

# Every variable Settings reads: a test sets what it needs on a clean slate.
VARIABLES = (
    "HOST",
    "PORT",
    "METRICS_PORT",
    "REQUIRE_SALT",
    "USER_SALT",
    "APP_VERSION",
    "APP_REVISION",
    "POD_IP",
    "NODE_IP",
    "DRAIN_SECONDS",
    "GRACEFUL_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "SLOW_REQUEST_SECONDS",
    "SHED_LOAD",
    "MAX_IN_FLIGHT",
    "CPU_LIMIT_MILLICORES",
    "SATURATED_LAG_SECONDS",
    "MAX_CONNECTIONS",
    "SHED_EXEMPT_ADDRESSES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert (settings.HOST, settings.PORT) == ("0.0.0.0", 8000)
    assert settings.METRICS_PORT == 9797
    assert settings.USER_SALT.get_secret_value() == ""
    assert not settings.salt_is_set
    assert settings.APP_VERSION == __version__
    assert settings.APP_REVISION == "unknown"
    assert settings.REQUIRE_SALT is False  # `make run` and the minikube flow need no salt
    assert (settings.POD_IP, settings.NODE_IP) == ("unknown", "unknown")
    # The Deployment's grace period is sized from these two (docs/design.md, How a pod shuts down).
    assert (settings.DRAIN_SECONDS, settings.GRACEFUL_TIMEOUT_SECONDS) == (5.0, 10.0)
    assert settings.LOG_LEVEL == "INFO"
    assert settings.SLOW_REQUEST_SECONDS == 0.25
    # docs/capacity.md#overload derives these.
    assert settings.SHED_LOAD is True
    assert (settings.MAX_IN_FLIGHT, settings.CPU_LIMIT_MILLICORES) == (None, 1000)
    assert (settings.in_flight_bound, settings.SATURATED_LAG_SECONDS) == (48, 0.005)
    assert settings.MAX_CONNECTIONS == 2048
    assert settings.SHED_EXEMPT_ADDRESSES == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("millicores", "bound"),
    [
        (1000, 48),  # a whole core: IN_FLIGHT_PER_CORE
        (4000, 48),  # one event loop uses one core, whatever the limit
        (250, 12),  # a quarter of a core serves each request in 4x the time
        (500, 24),
        (260, 12),  # rounded: 12.48
        (270, 13),  # 12.96
        (100, 5),  # 4.8
        (90, 4),  # 4.32, and MIN_IN_FLIGHT
        (50, 4),  # 2.4: a few at once, however small the limit
    ],
)
def test_the_in_flight_bound_follows_the_cpu_limit(millicores: int, bound: int) -> None:
    settings = Settings(CPU_LIMIT_MILLICORES=millicores)
    assert (IN_FLIGHT_PER_CORE, MIN_IN_FLIGHT) == (48, 4)
    assert settings.in_flight_bound == bound


def test_a_set_max_in_flight_wins_over_the_cpu_limit() -> None:
    assert Settings(MAX_IN_FLIGHT=7, CPU_LIMIT_MILLICORES=250).in_flight_bound == 7


def test_salt_never_appears_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SALT", "SUPERSECRETSALT")
    settings = load_settings()
    assert settings.salt_is_set
    assert "SUPERSECRETSALT" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "1", 1),
        ("PORT", "65535", 65535),
        ("METRICS_PORT", "1", 1),
        ("METRICS_PORT", "65535", 65535),
        ("DRAIN_SECONDS", "0", 0.0),
        ("DRAIN_SECONDS", "300", 300.0),
        ("GRACEFUL_TIMEOUT_SECONDS", "0", 0.0),
        ("GRACEFUL_TIMEOUT_SECONDS", "300", 300.0),
        ("SLOW_REQUEST_SECONDS", "0", 0.0),
        ("SLOW_REQUEST_SECONDS", "300", 300.0),
        *[("LOG_LEVEL", level, level) for level in ("DEBUG", "INFO", "WARNING", "ERROR")],
        ("LOG_LEVEL", "CRITICAL", "CRITICAL"),
        ("POD_IP", "fe80::1", "fe80::1"),
        ("APP_REVISION", "sha256:0123abcd", "sha256:0123abcd"),
        *[("REQUIRE_SALT", value, False) for value in ("false", "0")],
        ("SHED_LOAD", "false", False),
        ("MAX_IN_FLIGHT", "1", 1),
        ("MAX_IN_FLIGHT", "100000", 100_000),
        ("CPU_LIMIT_MILLICORES", "1", 1),
        ("CPU_LIMIT_MILLICORES", "1000000", 1_000_000),
        ("SATURATED_LAG_SECONDS", "10", 10.0),
        ("MAX_CONNECTIONS", "1", 1),
        ("MAX_CONNECTIONS", "1000000", 1_000_000),
        ("SHED_EXEMPT_ADDRESSES", "", ()),
        ("SHED_EXEMPT_ADDRESSES", " 10.0.0.1 ,, fe80::1 ", ("10.0.0.1", "fe80::1")),
    ],
)
def test_values_at_the_bounds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), name) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "70000"),
        ("METRICS_PORT", "0"),
        ("METRICS_PORT", "65536"),
        ("METRICS_PORT", "8000"),  # PORT's default: one listener cannot be both
        ("DRAIN_SECONDS", "-1"),
        ("DRAIN_SECONDS", "300.5"),
        ("GRACEFUL_TIMEOUT_SECONDS", "soon"),
        ("GRACEFUL_TIMEOUT_SECONDS", "-1"),
        ("GRACEFUL_TIMEOUT_SECONDS", "301"),
        ("SLOW_REQUEST_SECONDS", "-0.1"),
        ("SLOW_REQUEST_SECONDS", "301"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", "debug"),
        ("APP_VERSION", ""),
        ("APP_REVISION", ""),
        ("REQUIRE_SALT", "maybe"),
        ("POD_IP", ""),
        ("NODE_IP", ""),
        ("SHED_LOAD", "sometimes"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_IN_FLIGHT", "100001"),
        ("CPU_LIMIT_MILLICORES", "0"),
        ("CPU_LIMIT_MILLICORES", "1000001"),
        ("CPU_LIMIT_MILLICORES", "250m"),  # the Deployment passes millicores, a plain number
        ("SATURATED_LAG_SECONDS", "0"),
        ("SATURATED_LAG_SECONDS", "10.5"),
        ("MAX_CONNECTIONS", "0"),
        ("MAX_CONNECTIONS", "1000001"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_every_bad_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "0")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    prefix, problems = str(caught.value).split(": ", 1)
    assert prefix == "invalid environment settings"
    assert [problem.split(": ")[0] for problem in problems.split("; ")] == ["PORT", "LOG_LEVEL"]


@pytest.mark.parametrize(("port", "metrics_port"), [("9797", None), ("9100", "9100")])
def test_the_metrics_port_must_differ_from_the_service_port(
    monkeypatch: pytest.MonkeyPatch, port: str, metrics_port: str | None
) -> None:
    monkeypatch.setenv("PORT", port)
    if metrics_port is not None:
        monkeypatch.setenv("METRICS_PORT", metrics_port)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid environment settings: METRICS_PORT: must differ from PORT"
    )


def test_a_bad_service_port_is_not_also_reported_as_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "METRICS_PORT" not in str(caught.value)


def test_names_are_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the exact names count: a `port` or `host` meant for another program in the same
    # environment is not ours.
    monkeypatch.setenv("port", "not-a-port")
    monkeypatch.setenv("user_salt", "lowercase")
    settings = load_settings()
    assert settings.PORT == 8000
    assert not settings.salt_is_set


# --- the salt guard ---------------------------------------------------------------------

GUARD_MESSAGE = (
    "invalid environment settings: USER_SALT: must be set, and not to the test salt,"
    " when REQUIRE_SALT is true"
)


@pytest.mark.parametrize(
    "salt",
    [
        None,  # unset
        "",
        "TESTSALT",
        # A Secret written with `echo` ends in a newline: still the test salt, still empty.
        "TESTSALT\n",
        " \n",
    ],
)
def test_a_required_salt_may_be_neither_empty_nor_the_test_salt(
    monkeypatch: pytest.MonkeyPatch, salt: str | None
) -> None:
    monkeypatch.setenv("REQUIRE_SALT", "true")
    if salt is not None:
        monkeypatch.setenv("USER_SALT", salt)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    # It names the variable and never the value.
    assert str(caught.value) == GUARD_MESSAGE


@pytest.mark.parametrize("salt", ["a-real-salt", "TESTSALT2", "testsalt"])
@pytest.mark.parametrize("required", ["true", "1", "TRUE"])
def test_a_required_salt_that_is_neither_starts(
    monkeypatch: pytest.MonkeyPatch, salt: str, required: str
) -> None:
    monkeypatch.setenv("REQUIRE_SALT", required)
    monkeypatch.setenv("USER_SALT", salt)
    settings = load_settings()
    assert settings.REQUIRE_SALT is True
    assert settings.USER_SALT.get_secret_value() == salt


@pytest.mark.parametrize("salt", [None, "", "TESTSALT"])
def test_without_the_guard_any_salt_starts(
    monkeypatch: pytest.MonkeyPatch, salt: str | None
) -> None:
    if salt is not None:
        monkeypatch.setenv("USER_SALT", salt)
    assert load_settings().USER_SALT.get_secret_value() == (salt or "")


def test_the_test_salt_is_the_contracts() -> None:
    assert TEST_SALT == "TESTSALT"


def test_a_bad_guard_value_is_refused_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not read as "off": a typo must not start a production pod with the test salt.
    monkeypatch.setenv("REQUIRE_SALT", "yes please")
    monkeypatch.setenv("USER_SALT", "TESTSALT")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    problems = str(caught.value).split(": ", 1)[1]
    assert [problem.split(": ")[0] for problem in problems.split("; ")] == ["REQUIRE_SALT"]
