"""TLS through nginx: the shipped docs/deploy/nginx.conf, run as it is in front of a router.

The test copies the file, puts its own ports and a self-signed certificate in
place of the marked values (nothing else), and starts Debian's nginx with it.
A WAMP client then signs in over wss:// and receives an event published
through the pipeline, the page answers over https, and what the file says of
plain HTTP and old TLS holds.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.ports import free_port, wait_port
from harness.processes import ROOT, Child, Router, base_env
from harness.producers import app_client
from tests.support.wss import WssClient

NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
SHIPPED = ROOT / "docs" / "deploy" / "nginx.conf"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(NGINX is None, reason="needs nginx (apt install nginx; .ci/run does)"),
]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings test")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
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


def substituted(text: str, replacements: dict[str, str]) -> str:
    """The shipped file with each marked value replaced; each must be there, and none stay."""
    for old, new in replacements.items():
        assert old in text, f"docs/deploy/nginx.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    for old in replacements:
        assert old not in text
    return text


class Nginx(Child):
    """Debian's nginx in the foreground, as the current user, with everything in `directory`."""

    def __init__(self, directory: Path, router_port: int, cert: Path, key: Path) -> None:
        self.dir = directory
        self.tls_port = free_port()
        self.http_port = free_port()
        site = substituted(
            SHIPPED.read_text(encoding="utf-8"),
            {
                "listen 443 ssl;": f"listen 127.0.0.1:{self.tls_port} ssl;",
                "listen 80;": f"listen 127.0.0.1:{self.http_port};",
                "/etc/ssl/tidings/fullchain.pem": str(cert),
                "/etc/ssl/tidings/privkey.pem": str(key),
                "http://127.0.0.1:8080;": f"http://127.0.0.1:{router_port};",
            },
        )
        (directory / "tidings.conf").write_text(site, encoding="utf-8")
        temp = "\n".join(
            f"    {kind}_temp_path {directory / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx would hand its workers to `nobody`: keep them this user's.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}worker_processes 1;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {directory / 'access.log'};\n"
            f"{temp}\n"
            f"    include {directory / 'tidings.conf'};\n"
            "}\n",
            encoding="utf-8",
        )

    def start(self) -> Nginx:
        argv = [str(NGINX), "-e", "stderr", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        argv += ["-g", f"daemon off; pid {self.dir / 'nginx.pid'}; error_log stderr;"]
        self._spawn(argv, dict(os.environ), self.dir / "nginx.log", self.dir)
        wait_port(self.tls_port, 15, self.alive)
        wait_port(self.http_port, 15, self.alive)
        return self

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.tls_port}/ws"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test's certificate only, as browsers trust a real one."""
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture(scope="module")
def nginx(router: Router, certificate: tuple[Path, Path], tmp_path_factory) -> Iterator[Nginx]:
    proc = Nginx(tmp_path_factory.mktemp("nginx"), router.web_port, *certificate).start()
    yield proc
    proc.stop()


def test_an_event_reaches_a_client_over_wss_and_the_page_over_https(
    nginx: Nginx, worker, broker_url: str, trusting: ssl.SSLContext
):
    user = f"tls-{uuid.uuid4().hex[:8]}"
    topic = f"tidings.user.{user}"
    with WssClient(nginx.wss_url, trusting, user, [topic]).start() as client:
        assert client.joined.is_set(), f"refused: {client.close_code} {client.close_reason}"
        text = f"over TLS {uuid.uuid4()}"
        app_client(broker_url).send_task(
            "tidings.publish", [topic, {"text": text}], queue="tidings"
        )
        events = client.wait_for(lambda seen: any(e.get("text") == text for e in seen), 20)
    assert [e["text"] for e in events] == [text]

    url = f"https://127.0.0.1:{nginx.tls_port}/"
    with urllib.request.urlopen(url, context=trusting, timeout=10) as page:
        assert page.status == 200
        assert b"<html" in page.read().lower()
        assert page.headers["Strict-Transport-Security"] == "max-age=63072000"


def test_plain_http_is_redirected_or_refused_and_old_tls_too(
    nginx: Nginx, certificate: tuple[Path, Path]
):
    # The plain-HTTP server sends every request to https, the same path.
    plain = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=10)
    plain.request("GET", "/?user=1")
    answer = plain.getresponse()
    assert (answer.status, answer.getheader("Location")) == (301, "https://127.0.0.1/?user=1")
    plain.close()

    # Plain HTTP to the TLS port: nginx's own 400, not the page.
    wrong = http.client.HTTPConnection("127.0.0.1", nginx.tls_port, timeout=10)
    wrong.request("GET", "/")
    answer = wrong.getresponse()
    assert answer.status == 400
    assert b"plain HTTP request was sent to HTTPS port" in answer.read()
    wrong.close()

    # TLS 1.2 and older: no handshake.
    old = ssl.create_default_context(cafile=str(certificate[0]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", nginx.tls_port), timeout=10) as sock,
        old.wrap_socket(sock, server_hostname="127.0.0.1"),
    ):
        pass


def test_the_router_counts_browsers_by_the_address_nginx_forwards(
    broker_url: str, certificate: tuple[Path, Path], trusting: ssl.SSLContext, tmp_path: Path
):
    """With one connection allowed per address, a second one through nginx is closed: the
    router took the browser's address from X-Forwarded-For (a loopback peer without it
    would not be counted at all)."""
    router = Router(tmp_path / "router", env=base_env(TIDINGS_MAX_CONNECTIONS_PER_ADDRESS="1"))
    router.start()
    proxy = Nginx(tmp_path, router.web_port, *certificate).start()
    try:
        with WssClient(proxy.wss_url, trusting, "tls-first").start() as first:
            assert first.joined.is_set(), f"refused: {first.close_code} {first.close_reason}"
            second = WssClient(proxy.wss_url, trusting, "tls-second").start()
            deadline = time.monotonic() + 10
            while not second.ended.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            second.close()
            assert not second.joined.is_set()
            assert second.close_code == 4008, (second.close_code, second.close_reason)
    finally:
        proxy.stop()
        router.stop()
