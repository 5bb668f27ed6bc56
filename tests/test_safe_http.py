"""The SSRF-safe client: refused URLs never reach a listener, and slow or huge answers are cut."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from generation.safe_http import FetchFailed, FetchPolicy, UnsafeURL, get, request

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


@dataclass
class Listener:
    """A real HTTP server on a loopback address that records every request it gets."""

    host: str
    port: int
    hits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which can hang without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]


Answer = Callable[[BaseHTTPRequestHandler], None]


def _ok(handler: BaseHTTPRequestHandler) -> None:
    body = b"hello from the listener"
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., Listener]]:
    """Start a recording HTTP server on a given loopback address; stopped after the test."""
    servers: list[_Server] = []

    def start(host: str = "127.0.0.1", answer: Answer = _ok, port: int = 0) -> Listener:
        listener = Listener(host, 0)

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                listener.hits.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": self.headers,
                        "body": body,
                    }
                )
                answer(self)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        server_cls = type("Server", (_Server,), {"address_family": _family(host)})
        server = server_cls((host, port), Handler)
        servers.append(server)
        listener.port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return listener

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _redirect_to(location: str, status: int = 302) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def _policy(*ports: int, networks: tuple[str, ...] = (), **kwargs: Any) -> FetchPolicy:
    return FetchPolicy(allowed_ports=(80, 443, *ports), allowed_networks=networks, **kwargs)


def test_it_refuses_internal_addresses_and_odd_urls_without_connecting(serve):
    listener = serve("127.0.0.1")
    port = listener.port
    urls = [
        f"http://127.0.0.1:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[64:ff9b::7f00:1]:{port}/",
        f"http://[2002:7f00:1::]:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://0177.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://0.0.0.0:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.0.0.192/",  # Oracle Cloud's legacy metadata address
        "http://168.63.129.16/",  # Azure's WireServer
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{port}/",
        "gopher://127.0.0.1/",
        "http://user:pw@example.com/",
        f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/",
        "http:///no-host",
    ]
    v6 = _try_serve(serve, "::1")
    if v6 is not None:
        urls.append(f"http://[::1]:{v6.port}/")
        urls.append(f"http://localhost:{v6.port}/")
    policy = _policy(port, *([v6.port] if v6 else []))
    for url in urls:
        with pytest.raises(UnsafeURL):
            request("GET", url, policy=policy)
    assert listener.hits == []
    assert v6 is None or v6.hits == []


def _try_serve(serve: Callable[..., Listener], host: str) -> Listener | None:
    try:
        return serve(host)
    except OSError:
        return None


def test_it_refuses_ipv6_loopback(serve):
    listener = _try_serve(serve, "::1")
    if listener is None:
        pytest.skip("this machine cannot bind ::1")
    with pytest.raises(UnsafeURL, match=r"address ::1 is not allowed"):
        get(listener.url, policy=_policy(listener.port))
    assert listener.hits == []
    # The same listener answers once ::1 is allowed, so the refusal above was the address check.
    assert get(listener.url, policy=_policy(listener.port, networks=("::1/128",))).status == 200


def test_it_says_why_a_url_is_refused():
    with pytest.raises(UnsafeURL) as scheme:
        get("file:///etc/passwd", policy=FetchPolicy())
    with pytest.raises(UnsafeURL) as port:
        get("http://example.com:8080/", policy=FetchPolicy())
    with pytest.raises(UnsafeURL) as address:
        get("http://127.0.0.1/", policy=FetchPolicy())
    assert str(scheme.value) == "Only http and https URLs are allowed."
    assert str(port.value) == "Port 8080 is not allowed; use one of 80, 443."
    assert str(address.value) == (
        "The URL's address 127.0.0.1 is not allowed (private, loopback or reserved network)."
    )


def test_it_fetches_from_an_allowed_network(serve):
    listener = serve("127.0.0.1")
    response = get(
        listener.url + "a/b?c=1", policy=_policy(listener.port, networks=("127.0.0.0/8",))
    )
    assert (response.status, response.body) == (200, b"hello from the listener")
    assert response.url == listener.url + "a/b?c=1"
    assert response.headers["content-length"] == str(len(response.body))
    assert listener.hits[0]["path"] == "/a/b?c=1"


def test_it_sends_the_urls_host_while_connecting_to_the_checked_address(serve):
    listener = serve("127.0.0.1")
    url = f"http://localhost:{listener.port}/"
    get(url, policy=_policy(listener.port, networks=("127.0.0.0/8", "::1/128")))
    assert listener.hits[0]["headers"]["Host"] == f"localhost:{listener.port}"


def test_it_connects_to_the_address_it_checked_not_a_second_dns_answer(serve, monkeypatch):
    # Stand in for DNS only (no resolver can be staged here): the first answer is an allowed
    # address, later ones the loopback that a rebinding attacker would switch to.
    allowed = serve("127.0.0.2")
    internal = serve("127.0.0.1", port=allowed.port)
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.2"])

    def rebinding_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            host = next(answers, "127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    url = f"http://rebind.test:{allowed.port}/"
    response = get(url, policy=_policy(allowed.port, networks=("127.0.0.2/32",)))
    assert response.status == 200
    assert len(allowed.hits) == 1
    assert internal.hits == []


def test_it_refuses_a_redirect_to_loopback_without_connecting(serve):
    target = serve("127.0.0.1")
    redirector = serve("127.0.0.2", _redirect_to(target.url))
    policy = _policy(target.port, redirector.port, networks=("127.0.0.2/32",))
    with pytest.raises(UnsafeURL, match="127.0.0.1 is not allowed"):
        get(redirector.url, policy=policy)
    assert len(redirector.hits) == 1
    assert target.hits == []


def test_it_refuses_a_redirect_to_another_scheme(serve):
    redirector = serve("127.0.0.2", _redirect_to("file:///etc/passwd"))
    with pytest.raises(UnsafeURL, match="Only http and https"):
        get(redirector.url, policy=_policy(redirector.port, networks=("127.0.0.2/32",)))


def test_it_follows_an_allowed_redirect(serve):
    target = serve("127.0.0.1")
    redirector = serve("127.0.0.2", _redirect_to(target.url + "moved", status=301))
    policy = _policy(target.port, redirector.port, networks=("127.0.0.0/8",))
    response = get(redirector.url, policy=policy)
    assert (response.status, response.body) == (200, b"hello from the listener")
    assert response.url == target.url + "moved"


def test_a_path_beyond_ascii_is_sent_percent_encoded(serve):
    target = serve("127.0.0.1")
    # A Location's raw UTF-8 bytes, as the server's Latin-1 header writer sends them.
    raw_utf8 = "/p\N{LATIN CAPITAL LETTER A WITH TILDE}\N{COPYRIGHT SIGN}"
    redirector = serve("127.0.0.2", _redirect_to(target.url.rstrip("/") + raw_utf8))
    policy = _policy(target.port, redirector.port, networks=("127.0.0.0/8",))
    assert get(target.url + "café.png?q=é\u2028", policy=policy).status == 200
    assert get(redirector.url, policy=policy).url == target.url + "pé"
    assert [hit["path"] for hit in target.hits] == ["/caf%C3%A9.png?q=%C3%A9%E2%80%A8", "/p%C3%A9"]


def test_a_redirect_to_a_url_that_is_not_valid_fails_the_fetch(serve):
    redirector = serve("127.0.0.2", _redirect_to("http://[::1"))
    with pytest.raises(FetchFailed, match="redirected to a URL that is not valid"):
        get(redirector.url, policy=_policy(redirector.port, networks=("127.0.0.2/32",)))


def test_it_gives_up_after_max_redirects(serve):
    def to_itself(handler: BaseHTTPRequestHandler) -> None:
        _redirect_to(f"http://127.0.0.1:{handler.server.server_address[1]}/again")(handler)

    looping = serve("127.0.0.1", to_itself)
    policy = _policy(looping.port, networks=("127.0.0.0/8",), max_redirects=3)
    with pytest.raises(FetchFailed, match=r"Too many redirects \(more than 3\)"):
        get(looping.url, policy=policy)
    assert len(looping.hits) == 4


def test_a_webhook_post_does_not_follow_a_redirect(serve):
    target = serve("127.0.0.1")
    receiver = serve("127.0.0.1", _redirect_to(target.url))
    response = request(
        "POST",
        receiver.url,
        policy=_policy(receiver.port, target.port, networks=("127.0.0.0/8",)),
        body=b'{"status": "success"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 302
    assert receiver.hits[0]["method"] == "POST"
    assert receiver.hits[0]["body"] == b'{"status": "success"}'
    assert target.hits == []


def test_get_raises_on_an_error_status(serve):
    def not_found(handler: BaseHTTPRequestHandler) -> None:
        handler.send_error(404)

    listener = serve("127.0.0.1", not_found)
    with pytest.raises(FetchFailed, match="answered 404"):
        get(listener.url, policy=_policy(listener.port, networks=("127.0.0.0/8",)))


@dataclass
class RawServer:
    """A hand-written TCP server, for answers no polite HTTP server would give."""

    port: int
    sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    """Run `talk(conn, server)` on the first connection to 127.0.0.1; `server.sent` counts bytes."""
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(talk: Callable[[socket.socket, RawServer], None]) -> RawServer:
        listening = socket.create_server(("127.0.0.1", 0))
        sockets.append(listening)
        server = RawServer(listening.getsockname()[1])

        def run() -> None:
            conn, _ = listening.accept()
            with conn:
                conn.settimeout(5)
                request_head = b""
                while b"\r\n\r\n" not in request_head:
                    request_head += conn.recv(4096)
                try:
                    talk(conn, server)
                except OSError:
                    pass  # the client hung up, which is what these tests want
            server.done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return server

    yield start
    for s in sockets:
        s.close()
    for t in threads:
        t.join(timeout=5)


def _drip(
    head: bytes, byte: bytes, stop_after: float = 6.0
) -> Callable[[socket.socket, Any], None]:
    def talk(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(head)
        end = time.monotonic() + stop_after
        while time.monotonic() < end:
            conn.sendall(byte)
            server.sent += 1
            time.sleep(0.1)

    return talk


def test_it_stops_a_slow_drip_body_at_the_deadline(raw_server):
    server = raw_server(_drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x"))
    started = time.monotonic()
    with pytest.raises(FetchFailed) as failure:
        get(server.url, policy=_policy(server.port, networks=("127.0.0.0/8",), timeout=1.0))
    elapsed = time.monotonic() - started
    assert failure.value.timed_out
    assert str(failure.value) == "The download took longer than 1 s."
    assert elapsed < 3
    assert server.sent >= 3  # the server really was dripping while we waited


def test_it_stops_slow_drip_headers_at_the_deadline(raw_server):
    server = raw_server(_drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"))
    started = time.monotonic()
    with pytest.raises(FetchFailed) as failure:
        get(server.url, policy=_policy(server.port, networks=("127.0.0.0/8",), timeout=1.0))
    assert failure.value.timed_out
    assert time.monotonic() - started < 3


def _stream(
    head: bytes, chunked: bool, total: int = 50 * MiB
) -> Callable[[socket.socket, Any], None]:
    block = b"x" * (64 * 1024)

    def talk(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(head)
        while server.sent < total:
            conn.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            server.sent += len(block)
        if chunked:
            conn.sendall(b"0\r\n\r\n")

    return talk


@pytest.mark.parametrize(
    "head, chunked",
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    ],
    ids=["until-close", "chunked"],
)
def test_it_stops_reading_a_body_over_the_cap(raw_server, head, chunked):
    server = raw_server(_stream(head, chunked))
    policy = _policy(server.port, networks=("127.0.0.0/8",), max_bytes=MiB)
    with pytest.raises(FetchFailed, match="larger than 1 MiB") as failure:
        get(server.url, policy=policy)
    assert not failure.value.timed_out
    assert server.done.wait(5)
    # What the server got out is the cap plus whatever the kernel buffers took, not 50 MiB.
    assert server.sent < 20 * MiB


def test_it_refuses_a_content_length_over_the_cap_before_reading_the_body(raw_server):
    def announce_and_wait(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (50 * MiB))
        conn.recv(1)  # send no body; returns once the client hangs up

    server = raw_server(announce_and_wait)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="larger than 1 MiB"):
        get(server.url, policy=_policy(server.port, networks=("127.0.0.0/8",), max_bytes=MiB))
    assert time.monotonic() - started < 2


def test_it_reports_a_refused_connection():
    with socket.create_server(("127.0.0.1", 0)) as s:
        closed_port = s.getsockname()[1]
    with pytest.raises(FetchFailed) as failure:
        get(
            f"http://127.0.0.1:{closed_port}/",
            policy=_policy(closed_port, networks=("127.0.0.0/8",)),
        )
    assert not failure.value.timed_out


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _serve_tls(host: str, cert: Path, key: Path) -> tuple[_Server, Listener]:
    listener = Listener(host, 0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            listener.hits.append({"headers": self.headers})
            _ok(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server((host, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    listener.port = server.server_address[1]
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server, listener


@pytest.fixture
def https_listener(tls_files) -> Iterator[Listener]:
    server, listener = _serve_tls("127.0.0.1", *tls_files)
    yield listener
    server.shutdown()
    server.server_close()


def test_it_verifies_the_certificate_of_the_urls_host(https_listener):
    url = f"https://localhost:{https_listener.port}/"
    policy = _policy(https_listener.port, networks=("127.0.0.0/8", "::1/128"))
    with pytest.raises(FetchFailed, match="could not be verified"):
        get(url, policy=policy)


def test_it_speaks_https_to_a_trusted_certificate(https_listener, tls_files, monkeypatch):
    # OpenSSL reads SSL_CERT_FILE whenever a default context loads its trust store.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    url = f"https://localhost:{https_listener.port}/"
    response = get(url, policy=_policy(https_listener.port, networks=("127.0.0.0/8", "::1/128")))
    assert response.body == b"hello from the listener"
    assert https_listener.hits[0]["headers"]["Host"] == f"localhost:{https_listener.port}"


def test_it_reads_the_policy_from_settings(settings):
    from generation.safe_http import policy_from_settings

    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, 9000)
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ("10.1.0.0/16",)
    settings.PICTOR_FETCH_MAX_BYTES = 1234
    settings.PICTOR_FETCH_TIMEOUT = 2.5
    assert policy_from_settings() == FetchPolicy(
        allowed_ports=(80, 443, 9000),
        allowed_networks=("10.1.0.0/16",),
        max_bytes=1234,
        timeout=2.5,
    )


def _settings_in_subprocess(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'sdplatform.settings');"
        "django.setup(); from django.conf import settings as s;"
        "print(s.PICTOR_FETCH_ALLOWED_PORTS, s.PICTOR_FETCH_ALLOWED_NETWORKS)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_read_lists_and_refuse_a_bad_network():
    good = _settings_in_subprocess(
        PICTOR_FETCH_ALLOWED_PORTS="80, 443,9000",
        PICTOR_FETCH_ALLOWED_NETWORKS="10.0.0.0/8,fd00::/8",
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "(80, 443, 9000) ('10.0.0.0/8', 'fd00::/8')"
    bad = _settings_in_subprocess(PICTOR_FETCH_ALLOWED_NETWORKS="10.0.0.0/8,intranet")
    assert bad.returncode != 0
    assert "ImproperlyConfigured" in bad.stderr
    assert "PICTOR_FETCH_ALLOWED_NETWORKS" in bad.stderr
