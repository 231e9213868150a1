"""TLS: the real client always connects with ``wss://`` (and ``https://`` for the lookup and
the data channels' signalling). A server started as ``sessionhub serve --tls-cert FILE
--tls-key FILE`` does - uvicorn's own TLS (``ssl_certfile``/``ssl_keyfile``) over the same
configuration - serves them to a client that trusts a self-signed certificate, and a client
that does not trust it is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.live import make_settings

from sessionhub.server.runtime import build_runtime
from sessionhub.server.serving import uvicorn_config

from .client import AcClient
from .conftest import RoomServer


def self_signed(directory: Path) -> tuple[Path, Path]:
    """What ``openssl req -x509 -newkey ec ... -subj /CN=localhost`` makes (docs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[RoomServer, Path]]:
    cert, key = self_signed(tmp_path)
    settings = make_settings(tmp_path)
    runtime = build_runtime(settings)
    assert runtime.rooms is not None
    live = RoomServer(settings, runtime=runtime)
    live.rooms = runtime.rooms
    # What `sessionhub serve --tls-cert FILE --tls-key FILE` passes to uvicorn.
    config = uvicorn_config(live.app, settings, ssl_certfile=str(cert), ssl_keyfile=str(key))
    live.server = uvicorn.Server(config)
    live.start()
    yield live, cert
    live.stop()


async def test_wss_and_https_with_a_self_signed_certificate(
    tls: tuple[RoomServer, Path],
) -> None:
    live, cert = tls
    trusting = ssl.create_default_context(cafile=str(cert))
    base = f"https://localhost:{live.port}"
    async with httpx.AsyncClient(base_url=base, verify=trusting) as http:
        found = (await http.get("/session/secure")).json()
    assert found["url"] == f"{base}/room/secure"
    # The client connects to wss:// + the lookup's host and path, as disk.mjs does.
    tab = AcClient(f"wss://localhost:{live.port}/room/secure", ssl_context=trusting)
    try:
        await tab.connect()
        await tab.expect("connected")
        tab.send("hello", "over tls")
        assert (await tab.expect("hello"))["id"] == tab.id
    finally:
        await tab.close()
    stranger = AcClient(
        f"wss://localhost:{live.port}/room/secure", ssl_context=ssl.create_default_context()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await stranger.connect()
