"""The security tests run on the integration tests' servers (one of each kind)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures
    _plain_server,
    _tls_server,
    client_tls,
    serve,
    serve_tls,
    server_kind,
)
