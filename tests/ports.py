"""Free TCP ports on 127.0.0.1 for the servers the tests start.

Asking the kernel for port 0 hands out a port from the ephemeral range, which the suite's
own outgoing connections draw from too: between the probe closing and the server binding,
a client socket can take the port (``Address already in use``), and two probes in a row can
return the same port. So ports come from below the ephemeral range, each at most once per
run, and only when a probe can bind them.
"""

from __future__ import annotations

import random
import socket

# Below Linux's default ephemeral range (32768-60999) and above the well-known services.
_LOW, _HIGH = 20000, 32767
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing on 127.0.0.1 listens on that this run has not handed out before."""
    for _ in range(200):
        port = random.randint(_LOW, _HIGH)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port between {_LOW} and {_HIGH} after 200 tries")
