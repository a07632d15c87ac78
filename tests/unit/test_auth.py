"""Authentication: the Basic header parser, BasicAuth and its environment-variable verifier."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livepanel import Authenticator, BasicAuth, ConfigurationError
from livepanel.auth import parse_basic_authorization


def basic(credentials: bytes | str) -> bytes:
    """An Authorization header value for ``user:password``."""
    raw = credentials.encode("utf-8") if isinstance(credentials, str) else credentials
    return b"Basic " + base64.b64encode(raw)


def scope(*authorization: bytes) -> dict[str, Any]:
    """A WebSocket handshake scope with these Authorization headers."""
    headers = [(b"host", b"panel.example.com")]
    headers += [(b"authorization", value) for value in authorization]
    return {"type": "websocket", "path": "/ws", "headers": headers}


def authenticate(auth: BasicAuth, *authorization: bytes) -> Any:
    """The principal BasicAuth returns for a handshake with these headers."""
    return asyncio.run(auth(scope(*authorization)))  # type: ignore[arg-type]


class Recorder:
    """A sync verifier that records its calls and accepts one user."""

    def __init__(self, result: Any = True) -> None:
        self.calls: list[tuple[str, str]] = []
        self.result = result

    def __call__(self, username: str, password: str) -> Any:
        self.calls.append((username, password))
        return self.result if (username, password) == ("ada", "s3cret:pw") else None


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_USERNAME", "admin")
    monkeypatch.setenv("DASHBOARD_PASSWORD", "correct horse:battery")


# --------------------------------------------------------------------------- the parser


def test_basic_header_gives_username_and_password() -> None:
    """A well-formed Basic header parses into (username, password)."""
    assert parse_basic_authorization(basic("ada:lovelace")) == ("ada", "lovelace")


def test_password_may_contain_colons() -> None:
    """Only the first colon separates the username from the password."""
    assert parse_basic_authorization(basic("ada:pa:ss:word")) == ("ada", "pa:ss:word")


def test_password_may_be_empty() -> None:
    """``user:`` is a username with an empty password; the verifier decides."""
    assert parse_basic_authorization(basic("ada:")) == ("ada", "")


def test_credentials_may_be_utf8() -> None:
    """Usernames and passwords are decoded as UTF-8."""
    assert parse_basic_authorization(basic("zoë:пароль")) == ("zoë", "пароль")


def test_scheme_is_case_insensitive_and_header_may_be_text() -> None:
    """``basic``/``BASIC`` work, and the value may be a str as well as bytes."""
    token = base64.b64encode(b"ada:x").decode()
    assert parse_basic_authorization(f"basic {token}") == ("ada", "x")
    assert parse_basic_authorization(f"  BASIC   {token}  ") == ("ada", "x")


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"Basic",
        b"Basic ",
        b"Bearer " + base64.b64encode(b"ada:x"),
        b"Digest username=ada",
        base64.b64encode(b"ada:x"),
        b"Basic !!!not-base64!!!",
        b"Basic " + base64.b64encode(b"ada:x")[:-1],
        b"Basic " + base64.b64encode(b"ada-without-colon"),
        b"Basic " + base64.b64encode(b"\xff\xfe:password"),
        b"Basic " + base64.b64encode(b":password"),
        b"Basic \xc3\xa9",
        "Basic é",
        b"Basic " + base64.b64encode(b"a:" + b"x" * 9000),
    ],
)
def test_malformed_header_gives_none(value: bytes | str | None) -> None:
    """Another scheme, bad base64, no colon, not UTF-8, empty username, too long: None."""
    assert parse_basic_authorization(value) is None


@given(value=st.binary(max_size=200) | st.binary(max_size=150).map(basic))
def test_any_header_bytes_parse_or_give_none(value: bytes) -> None:
    """Property: any header value gives a (username, password) pair or None, never raises."""
    result = parse_basic_authorization(value)
    if result is not None:
        username, _ = result
        assert username
        assert ":" not in username


# --------------------------------------------------------------------------- BasicAuth


def test_basic_auth_returns_the_username_when_verify_returns_true() -> None:
    """verify returning True accepts, with the username as the principal."""
    assert authenticate(BasicAuth(Recorder()), basic("ada:s3cret:pw")) == "ada"


def test_basic_auth_returns_the_principal_verify_returns() -> None:
    """A truthy object from verify is the principal."""
    user = {"username": "ada", "role": "admin"}
    assert authenticate(BasicAuth(Recorder(result=user)), basic("ada:s3cret:pw")) is user


@pytest.mark.parametrize("result", [False, None, 0, "", {}])
def test_basic_auth_refuses_when_verify_returns_falsy(result: Any) -> None:
    """Anything falsy from verify refuses the handshake (None: a 401)."""
    assert authenticate(BasicAuth(lambda u, p: result), basic("ada:s3cret:pw")) is None


def test_basic_auth_passes_the_password_with_its_colons_to_verify() -> None:
    """verify receives the full password, colons included."""
    verify = Recorder()
    authenticate(BasicAuth(verify), basic("ada:s3cret:pw"))
    assert verify.calls == [("ada", "s3cret:pw")]


def test_basic_auth_awaits_an_async_verifier() -> None:
    """verify may be a coroutine function."""

    async def verify(username: str, password: str) -> Any:
        await asyncio.sleep(0)
        return {"user": username} if password == "pw" else None

    auth = BasicAuth(verify)
    assert authenticate(auth, basic("ada:pw")) == {"user": "ada"}
    assert authenticate(auth, basic("ada:nope")) is None


def test_basic_auth_refuses_a_handshake_without_authorization() -> None:
    """No Authorization header: no principal, and verify is not called."""
    verify = Recorder()
    assert authenticate(BasicAuth(verify)) is None
    assert verify.calls == []


def test_basic_auth_refuses_several_authorization_headers() -> None:
    """Two Authorization headers are ambiguous: refused without calling verify."""
    verify = Recorder()
    header = basic("ada:s3cret:pw")
    assert authenticate(BasicAuth(verify), header, header) is None
    assert verify.calls == []


@pytest.mark.parametrize(
    "header",
    [
        b"Basic %%%",
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Basic " + base64.b64encode(b"\xff:pw"),
        b"Bearer abc",
        b"Basic " + base64.b64encode(b":pw"),
    ],
)
def test_basic_auth_refuses_a_malformed_header_without_calling_verify(header: bytes) -> None:
    """A malformed header is a plain refusal (401), never an exception."""
    verify = Recorder()
    assert authenticate(BasicAuth(verify), header) is None
    assert verify.calls == []


@given(value=st.binary(max_size=200) | st.binary(max_size=150).map(basic))
def test_any_authorization_header_gives_a_principal_or_none(value: bytes) -> None:
    """Property: every Authorization header value → a principal or None, never an exception."""
    auth = BasicAuth(lambda username, password: True)
    principal = authenticate(auth, value)
    parsed = parse_basic_authorization(value)
    assert principal == (parsed[0] if parsed else None)


def test_basic_auth_challenge_names_the_realm() -> None:
    """The 401 challenge is Basic with the realm and UTF-8 charset."""
    assert BasicAuth(Recorder()).challenge == 'Basic realm="livepanel", charset="UTF-8"'
    assert BasicAuth(Recorder(), realm="ClawPanel").challenge.startswith('Basic realm="ClawPanel"')


@pytest.mark.parametrize("realm", ['say "hi"', "back\\slash", "line\nbreak"])
def test_basic_auth_refuses_a_realm_that_breaks_the_header(realm: str) -> None:
    """A realm with quotes, backslashes or control characters is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="realm"):
        BasicAuth(Recorder(), realm=realm)


def test_basic_auth_needs_a_callable_verifier() -> None:
    """BasicAuth(verify) refuses a verify that cannot be called."""
    with pytest.raises(ConfigurationError, match="callable"):
        BasicAuth("admin:admin")  # type: ignore[arg-type]


def test_basic_auth_is_an_authenticator() -> None:
    """BasicAuth satisfies the Authenticator protocol."""
    assert isinstance(BasicAuth(Recorder()), Authenticator)


def test_basic_auth_repr_shows_no_verifier_state() -> None:
    """repr names the realm only."""
    assert repr(BasicAuth(Recorder())) == "BasicAuth(realm='livepanel')"


# --------------------------------------------------------------------------- from_env


@pytest.mark.usefixtures("dashboard_env")
def test_from_env_accepts_the_configured_user() -> None:
    """The user named by DASHBOARD_USERNAME / DASHBOARD_PASSWORD is accepted."""
    assert authenticate(BasicAuth.from_env(), basic("admin:correct horse:battery")) == "admin"


@pytest.mark.usefixtures("dashboard_env")
@pytest.mark.parametrize(
    "credentials",
    ["admin:wrong", "Admin:correct horse:battery", "admin:correct horse", "root:x", "admin:"],
)
def test_from_env_refuses_other_credentials(credentials: str) -> None:
    """Any other username or password is refused."""
    assert authenticate(BasicAuth.from_env(), basic(credentials)) is None


@pytest.mark.parametrize(
    ("credentials", "principal"),
    [("ops:p:w", "ops"), ("ops:p", None), ("Ops:p:w", None), ("root:p:w", None)],
)
def test_for_user_accepts_that_user_only(credentials: str, principal: str | None) -> None:
    """for_user(username, password, realm): one user, its exact password, the realm given."""
    auth = BasicAuth.for_user("ops", "p:w", realm="livepanel demo")
    assert authenticate(auth, basic(credentials)) == principal
    assert auth.realm == "livepanel demo"


@pytest.mark.parametrize(("username", "password"), [("", "x"), ("ops", "")])
def test_for_user_refuses_empty_credentials(username: str, password: str) -> None:
    """An empty username or password would let anyone in, or no one: a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="for_user"):
        BasicAuth.for_user(username, password)


@pytest.mark.parametrize("missing", ["DASHBOARD_USERNAME", "DASHBOARD_PASSWORD"])
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_from_env_fails_closed_without_a_variable(
    monkeypatch: pytest.MonkeyPatch, missing: str, how: str
) -> None:
    """An unset or empty variable raises ConfigurationError naming it and suggesting auth=None."""
    monkeypatch.setenv("DASHBOARD_USERNAME", "admin")
    monkeypatch.setenv("DASHBOARD_PASSWORD", "pw")
    if how == "unset":
        monkeypatch.delenv(missing)
    else:
        monkeypatch.setenv(missing, "")
    with pytest.raises(ConfigurationError) as info:
        BasicAuth.from_env()
    assert isinstance(info.value, ValueError)
    assert missing in str(info.value)
    assert "auth=None" in str(info.value)


def test_from_env_reads_the_variables_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """user_var and password_var name other variables."""
    monkeypatch.delenv("DASHBOARD_USERNAME", raising=False)
    monkeypatch.setenv("PANEL_USER", "ops")
    monkeypatch.setenv("PANEL_PASS", "pw")
    auth = BasicAuth.from_env(user_var="PANEL_USER", password_var="PANEL_PASS")
    assert authenticate(auth, basic("ops:pw")) == "ops"
    monkeypatch.delenv("PANEL_PASS")
    with pytest.raises(ConfigurationError, match="PANEL_PASS"):
        BasicAuth.from_env(user_var="PANEL_USER", password_var="PANEL_PASS")


@pytest.mark.usefixtures("dashboard_env")
def test_from_env_reads_the_variables_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials are read at construction; later changes to the environment do nothing."""
    auth = BasicAuth.from_env()
    monkeypatch.setenv("DASHBOARD_PASSWORD", "changed")
    assert authenticate(auth, basic("admin:correct horse:battery")) == "admin"
    assert authenticate(auth, basic("admin:changed")) is None


@pytest.mark.usefixtures("dashboard_env")
def test_from_env_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Username and password are both compared with hmac.compare_digest, even on a wrong user."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    auth = BasicAuth.from_env()
    assert authenticate(auth, basic("mallory:guess")) is None
    assert compared == [(b"mallory", b"admin"), (b"guess", b"correct horse:battery")]


@pytest.mark.usefixtures("dashboard_env")
def test_credentials_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Accepting and refusing log nothing that contains a password or the encoded header."""
    caplog.set_level(logging.DEBUG)
    auth = BasicAuth.from_env()
    good, bad = basic("admin:correct horse:battery"), basic("admin:hunter2-guess")
    authenticate(auth, good)
    authenticate(auth, bad)
    authenticate(auth, b"Basic %%%garbage%%%")
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in ["correct horse", "hunter2-guess", good.decode(), bad.decode(), "garbage"]:
        assert secret not in text
