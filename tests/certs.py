"""Self-signed certificates for TLS tests, made with the openssl command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for 127.0.0.1 and localhost into ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def make_test_ca(
    directory: Path, server_names: str = "IP:127.0.0.1,DNS:localhost"
) -> dict[str, Path]:
    """A certificate authority and, signed by it, a server certificate for ``server_names``
    (127.0.0.1 and localhost unless told) and a client certificate: ``ca``, ``server_cert``,
    ``server_key``, ``client_cert``, ``client_key`` (PEM files in ``directory``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca_key")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-days", "1", "-subj", "/CN=livepanel test CA",
        "-keyout", str(paths["ca_key"]), "-out", str(paths["ca"]))  # fmt: skip
    for name, extension in (
        ("server", f"subjectAltName={server_names}"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key, cert, request = (
            directory / f"{name}{suffix}" for suffix in ("_key.pem", ".pem", ".csr")
        )
        extensions = directory / f"{name}.ext"
        extensions.write_text(extension + "\n")
        run("req", "-new", *ec, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request))
        run("x509", "-req", "-in", str(request), "-CA", str(paths["ca"]),
            "-CAkey", str(paths["ca_key"]), "-CAcreateserial", "-days", "1",
            "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
        paths[f"{name}_cert"], paths[f"{name}_key"] = cert, key
    return paths
