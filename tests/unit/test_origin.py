"""The origin policy of SPEC section 2: same-origin, exact origins, wildcards, "*" and "null"."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livepanel import ConfigurationError
from livepanel.origin import OriginPolicy, parse_origin

MALFORMED_ORIGINS = [
    "",
    " ",
    "panel.example.com",
    "//panel.example.com",
    "https://",
    "https://:443",
    "https://panel.example.com/path",
    "https://panel.example.com?x=1",
    "https://panel.example.com#top",
    "https://user@panel.example.com",
    "https://user:pw@panel.example.com",
    "https://panel.example.com:99999",
    "https://panel.example.com:port",
    "https://panel example.com",
    "https://panel.example.com\\.evil.com",
    "https://panel..example.com",
    "https://.panel.example.com",
    "https://pan<el.example.com",
    "https://panel.example.com\t",
    "https://pa\tnel.example.com",
    "https://panel.exämple.com",
    "http://[::1",
    "http://[not:an:ip]:80",
    "http://[v1.fe]:80",
    "NULL",
]


# --------------------------------------------------------------------------- same-origin


@pytest.mark.parametrize("allowed", [None, ["https://panel.example.com"], ["*"], []])
def test_request_without_origin_passes(allowed: list[str] | None) -> None:
    """A request without an Origin header (not a browser) passes under every policy."""
    assert OriginPolicy(allowed).allows(None, "panel.example.com")


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://panel.example.com", "panel.example.com"),
        ("http://panel.example.com", "panel.example.com"),
        ("http://localhost:8000", "localhost:8000"),
        ("https://localhost:8000", "localhost:8000"),
        ("https://panel.example.com", "panel.example.com:443"),
        ("http://panel.example.com", "panel.example.com:80"),
        ("https://PANEL.Example.com", "panel.example.COM"),
        ("http://[::1]:8000", "[::1]:8000"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),
        ("https://panel.example.com.", "panel.example.com."),
        ("https://xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_same_origin_allows_an_origin_with_the_hosts_host_and_port(origin: str, host: str) -> None:
    """By default the Origin's host and port must equal the Host header's; scheme is ignored."""
    assert OriginPolicy().allows(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://evil.example", "panel.example.com"),
        ("https://panel.example.com.evil.example", "panel.example.com"),
        ("https://sub.panel.example.com", "panel.example.com"),
        ("http://localhost:8001", "localhost:8000"),
        ("http://localhost", "localhost:8000"),
        ("http://localhost:8000", "localhost"),
        ("https://panel.example.com", "panel.example.com:80"),
        ("http://panel.example.com", "panel.example.com:443"),
    ],
)
def test_same_origin_refuses_another_host_or_port(origin: str, host: str) -> None:
    """A different host, or a port that differs once defaults are filled in, is refused."""
    assert not OriginPolicy().allows(origin, host)


@pytest.mark.parametrize("host", [None, "", "panel.example.com:port", "bad host", "a/b"])
def test_same_origin_refuses_when_the_host_header_is_missing_or_malformed(
    host: str | None,
) -> None:
    """Without a usable Host header there is nothing to be same-origin with."""
    assert not OriginPolicy().allows("https://panel.example.com", host)


def test_same_origin_refuses_null() -> None:
    """The literal origin "null" is refused by the default policy."""
    assert not OriginPolicy().allows("null", "panel.example.com")


# --------------------------------------------------------------------------- exact entries


def test_listed_origin_is_allowed() -> None:
    """An origin equal to a list entry is allowed."""
    policy = OriginPolicy(["https://panel.example.com", "http://localhost:3000"])
    assert policy.allows("https://panel.example.com", "api.internal")
    assert policy.allows("http://localhost:3000", "api.internal")


@pytest.mark.parametrize(
    "origin",
    [
        "http://panel.example.com",
        "https://panel.example.com:8443",
        "https://other.example.com",
        "https://sub.panel.example.com",
        "http://localhost:3001",
    ],
)
def test_unlisted_origin_is_refused(origin: str) -> None:
    """Entries compare scheme, host and port: any difference refuses."""
    policy = OriginPolicy(["https://panel.example.com", "http://localhost:3000"])
    assert not policy.allows(origin, "panel.example.com")


def test_listed_origin_matches_with_its_default_port_spelled_out() -> None:
    """https://host and https://host:443 are the same origin."""
    assert OriginPolicy(["https://panel.example.com"]).allows("https://panel.example.com:443", None)
    assert OriginPolicy(["https://panel.example.com:443"]).allows("https://panel.example.com", None)


def test_listed_origin_is_compared_case_insensitively() -> None:
    """Scheme and host are case-insensitive."""
    assert OriginPolicy(["HTTPS://Panel.Example.com"]).allows("https://panel.example.COM", None)


def test_list_does_not_fall_back_to_same_origin() -> None:
    """With a list, an origin equal to the Host is still refused unless listed."""
    policy = OriginPolicy(["https://panel.example.com"])
    assert not policy.allows("https://api.example.com", "api.example.com")


def test_empty_list_refuses_every_browser() -> None:
    """An empty list allows no origin at all (non-browser clients still pass)."""
    assert not OriginPolicy([]).allows("https://panel.example.com", "panel.example.com")


# --------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    "origin",
    ["https://a.example.com", "https://panel.example.com", "https://a.b.c.example.com"],
)
def test_wildcard_matches_one_or_more_labels(origin: str) -> None:
    """https://*.example.com matches any subdomain, however deep."""
    assert OriginPolicy(["https://*.example.com"]).allows(origin, None)


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",
        "https://.example.com",
        "https://..example.com",
        "https://evil.com\\.example.com",
        "https://notexample.com",
        "https://a.notexample.com",
        "https://example.com.evil.com",
        "https://a.example.com.evil.com",
        "http://a.example.com",
        "https://a.example.com:8443",
        "https://a.example.org",
    ],
)
def test_wildcard_refuses_the_bare_domain_and_lookalikes(origin: str) -> None:
    """The wildcard never matches the bare domain, other domains, schemes or ports."""
    assert not OriginPolicy(["https://*.example.com"]).allows(origin, None)


def test_wildcard_with_a_port_matches_that_port_only() -> None:
    """https://*.example.com:8443 compares the port too."""
    policy = OriginPolicy(["https://*.example.com:8443"])
    assert policy.allows("https://a.example.com:8443", None)
    assert not policy.allows("https://a.example.com", None)


# --------------------------------------------------------------------------- "*" and "null"


@pytest.mark.parametrize(
    "origin", ["https://anything.example", "http://localhost:1234", "chrome-extension://abc"]
)
def test_star_allows_any_origin(origin: str) -> None:
    """The entry "*" allows every well-formed origin."""
    assert OriginPolicy(["*"]).allows(origin, "panel.example.com")


def test_star_does_not_allow_null() -> None:
    """ "*" allows any origin but "null"."""
    assert not OriginPolicy(["*"]).allows("null", "panel.example.com")


def test_null_passes_only_when_listed() -> None:
    """The literal origin "null" (sandboxed iframes, file://) passes only when listed."""
    assert OriginPolicy(["null"]).allows("null", None)
    assert OriginPolicy(["*", "null"]).allows("null", None)
    assert not OriginPolicy(["https://panel.example.com"]).allows("null", None)


def test_null_entry_allows_nothing_else() -> None:
    """Listing "null" does not allow real origins."""
    assert not OriginPolicy(["null"]).allows("https://panel.example.com", "panel.example.com")


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("origin", MALFORMED_ORIGINS)
@pytest.mark.parametrize(
    "allowed", [None, ["*"], ["https://*.example.com", "https://panel.example.com"]]
)
def test_malformed_origin_is_refused(origin: str, allowed: list[str] | None) -> None:
    """An Origin that is not scheme://host[:port] is refused, even under "*"."""
    assert not OriginPolicy(allowed).allows(origin, "panel.example.com")


@pytest.mark.parametrize("origin", MALFORMED_ORIGINS)
def test_parse_origin_gives_none_for_malformed_origins(origin: str) -> None:
    """parse_origin returns None for anything but scheme://host[:port]."""
    assert parse_origin(origin) is None


@given(origin=st.text(max_size=60), host=st.none() | st.text(max_size=30))
def test_any_origin_and_host_get_a_decision(origin: str, host: str | None) -> None:
    """Property: any Origin and Host header text gives True or False, never an exception."""
    for policy in (OriginPolicy(), OriginPolicy(["*"]), OriginPolicy(["https://*.example.com"])):
        assert policy.allows(origin, host) in (True, False)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "panel.example.com",
        "*.example.com",
        "https://panel.example.com/",
        "https://panel.example.com/path",
        "https://panel.example.com:port",
        "https://user@panel.example.com",
        "https://*example.com",
        "https://a.*.example.com",
        "https://*.*.example.com",
        "https://*.",
        "https://*",
        "**",
        "https://panel..example.com",
        None,
        42,
        b"https://panel.example.com",
    ],
)
def test_bad_allowed_origins_entry_is_a_configuration_error(entry: Any) -> None:
    """An entry that is not an origin, a wildcard origin, "*" or "null" is refused at setup."""
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        OriginPolicy([entry])


def test_allowed_origins_as_a_single_string_is_a_configuration_error() -> None:
    """allowed_origins is a list; a bare string is refused with an example."""
    with pytest.raises(ConfigurationError, match=r"\['https://panel.example.com'\]"):
        OriginPolicy("https://panel.example.com")


def test_configuration_error_is_a_value_error() -> None:
    """ConfigurationError is a ValueError, so generic handlers catch it."""
    with pytest.raises(ValueError, match="allowed_origins"):
        OriginPolicy(["nope"])
