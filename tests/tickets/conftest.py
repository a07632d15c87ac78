"""The tickets tests run on the integration tests' shared servers, one of each kind."""

from tests.integration.conftest import _plain_server, serve, server_kind

__all__ = ["_plain_server", "serve", "server_kind"]
