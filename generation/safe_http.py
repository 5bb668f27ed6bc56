"""An HTTP client for URLs that users hand us (input images, webhooks), safe against SSRF.

Every hop is checked before any connection: the scheme, the port, no credentials, and every
address the host resolves to must be public (or inside an allowed network). The connection then
goes to that checked address, not to a second DNS answer, so DNS rebinding cannot swap in an
internal host. One wall-clock deadline bounds the whole request, redirects and body included,
and the body is capped while it streams in.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import SplitResult, quote, urljoin, urlsplit

CHUNK_SIZE = 64 * 1024
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "Pictor"
# Credentials meant for the first host must not travel to another one on a redirect.
CROSS_ORIGIN_DROPPED_HEADERS = ("authorization", "cookie", "proxy-authorization")
# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
# Refused although some Python versions' ipaddress call them global: the IETF protocol block,
# which holds Oracle Cloud's legacy metadata address 192.0.0.192, and Azure's WireServer.
DENIED_NETWORKS = (ipaddress.IPv4Network("192.0.0.0/24"), ipaddress.IPv4Network("168.63.129.16/32"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(ValueError):
    """The URL is refused before any connection; str() is a message for the user."""


class FetchFailed(Exception):
    """The request was made but failed; str() is a message for the user."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class FetchPolicy:
    allowed_ports: tuple[int, ...] = (80, 443)
    # CIDRs allowed even though they are not public, e.g. an internal MinIO.
    allowed_networks: tuple[str, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    # Seconds for the whole request: every hop, every connect, the whole body.
    timeout: float = 10.0
    max_redirects: int = 3

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """allowed_networks parsed, for _allowed."""
        return [ipaddress.ip_network(n) for n in self.allowed_networks]


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    url: str  # the final URL, after redirects


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII, without brackets; what goes into the Host header and SNI
    port: int
    path: str  # path and query
    addresses: tuple[tuple[int, tuple[Any, ...]], ...]  # (family, sockaddr), every one checked


def request(
    method: str,
    url: str,
    *,
    policy: FetchPolicy,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    follow_redirects: bool | None = None,
    sink: IO[bytes] | None = None,
    excerpt: int | None = None,
) -> HttpResponse:
    """Send one request to a user-supplied URL under `policy`; see the module docstring.

    With a `sink`, the final answer's body is written to it as it arrives (the answer's `body`
    is then empty), so a large download never sits in memory. With `excerpt`, only the body's
    first `excerpt` bytes are read, and a longer body is no failure.
    """
    method = method.upper()
    if follow_redirects is None:
        follow_redirects = method == "GET"
    deadline = time.monotonic() + policy.timeout
    sent_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    target = _check(url, policy)
    redirects = 0
    while True:
        response = _exchange(
            method, target, body, sent_headers, policy, deadline, follow_redirects, sink, excerpt
        )
        location = response.headers.get("location")
        if not (follow_redirects and response.status in REDIRECT_STATUSES and location):
            response.url = url
            return response
        redirects += 1
        if redirects > policy.max_redirects:
            raise FetchFailed(f"Too many redirects (more than {policy.max_redirects}).")
        try:
            next_url = urljoin(url, _header_text(location).strip())
        except ValueError:
            raise FetchFailed("The server redirected to a URL that is not valid.") from None
        next_target = _check(next_url, policy)
        if (next_target.scheme, next_target.host, next_target.port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            sent_headers = {
                k: v
                for k, v in sent_headers.items()
                if k.lower() not in CROSS_ORIGIN_DROPPED_HEADERS
            }
        # What browsers do: 303 always, and 301/302 after a POST, carry on as a GET.
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
        url, target = next_url, next_target


def get(url: str, *, policy: FetchPolicy, sink: IO[bytes] | None = None) -> HttpResponse:
    """GET a user-supplied URL, following redirects; a non-2xx answer raises FetchFailed."""
    response = request("GET", url, policy=policy, sink=sink)
    if not 200 <= response.status < 300:
        raise FetchFailed(f"The server answered {response.status}.")
    return response


def policy_from_settings() -> FetchPolicy:
    """The policy configured by the PICTOR_FETCH_* settings."""
    from django.conf import settings

    return FetchPolicy(
        allowed_ports=tuple(settings.PICTOR_FETCH_ALLOWED_PORTS),
        allowed_networks=tuple(settings.PICTOR_FETCH_ALLOWED_NETWORKS),
        max_bytes=settings.PICTOR_FETCH_MAX_BYTES,
        timeout=settings.PICTOR_FETCH_TIMEOUT,
    )


def check_url(url: str, policy: FetchPolicy) -> None:
    """Raise UnsafeURL for what the policy refuses without asking DNS: a URL to fetch later.

    A host named by its address (or `localhost`) is judged now; a name is judged where it is
    fetched, since what it resolves to may change until then.
    """
    _, host, _ = _parse(url, policy)
    host = host.lower().rstrip(".")
    # Names under localhost. never leave the machine (RFC 6761): judged as the loopback address.
    literal = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
    try:
        address = ipaddress.ip_address(literal.split("%")[0])
    except ValueError:
        return
    _judge(address, policy.networks())


def _parse(url: str, policy: FetchPolicy) -> tuple[SplitResult, str, int]:
    """The URL's parts, ASCII host and port, refusing what the policy does not allow."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise UnsafeURL("The URL must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeURL("The URL is not valid.") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeURL("Only http and https URLs are allowed.")
    if "@" in parts.netloc:
        raise UnsafeURL("URLs with a user name or password are not allowed.")
    if not parts.hostname:
        raise UnsafeURL("The URL has no host.")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
        host = parts.hostname.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise UnsafeURL("The URL's host or port is not valid.") from None
    if port not in policy.allowed_ports:
        allowed = ", ".join(str(p) for p in policy.allowed_ports)
        raise UnsafeURL(f"Port {port} is not allowed; use one of {allowed}.")
    return parts, host, port


def _check(url: str, policy: FetchPolicy) -> _Target:
    """Parse the URL and resolve its host, refusing anything the policy does not allow."""
    parts, host, port = _parse(url, policy)
    scheme = parts.scheme.lower()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise FetchFailed(f"Could not resolve the host {host}.") from None
    networks = policy.networks()
    addresses = []
    for family, _, _, _, sockaddr in infos:
        _judge(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]), networks)
        addresses.append((family, sockaddr))
    if not addresses:
        raise FetchFailed(f"Could not resolve the host {host}.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # What browsers send for a path with letters beyond ASCII (café.png): their UTF-8 bytes,
    # percent-encoded. A request line holds ASCII only.
    path = "".join(c if c.isascii() else quote(c) for c in path)
    return _Target(scheme, host, port, path, tuple(addresses))


def _header_text(value: str) -> str:
    """A header value as its sender wrote it: http.client reads the bytes as Latin-1, while a
    Location beyond ASCII is UTF-8 in practice (and in what browsers follow)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _judge(
    address: IPAddress, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    if not _allowed(address, networks):
        raise UnsafeURL(
            f"The URL's address {address} is not allowed (private, loopback or reserved network)."
        )


def _allowed(
    address: IPAddress, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    inner = _embedded_ipv4(address) or address
    if any(a in n for a in (address, inner) for n in networks if a.version == n.version):
        return True
    # ipaddress still calls deprecated site-local fec0::/10 global.
    if isinstance(inner, ipaddress.IPv6Address) and inner.is_site_local:
        return False
    if any(inner in n for n in DENIED_NETWORKS if inner.version == n.version):
        return False
    # An address wrapping IPv4 reaches that IPv4 host, so that is the one to judge.
    return _public(inner)


def _public(address: IPAddress) -> bool:
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_private
        or address.is_loopback
        or address.is_link_local
    )


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class _DeadlineSocket(socket.socket):
    """A socket whose every receive waits at most until the request's deadline.

    A per-call timeout alone lets a server that drips one byte a second hold us forever.
    """

    deadline: float = 0.0

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(_remaining(self.deadline))
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same deadline for TLS (the context builds these in place of SSLSocket)."""

    deadline: float = 0.0

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(_remaining(self.deadline))
        super().sendall(data, flags)


def _open_socket(target: _Target, deadline: float) -> socket.socket:
    """Connect to the first checked address that answers."""
    error: OSError | None = None
    for family, sockaddr in target.addresses:
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = deadline
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
    assert error is not None
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, while the Host header names the URL's host."""

    def __init__(self, target: _Target, deadline: float) -> None:
        super().__init__(target.host, target.port)
        self._target = target
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _open_socket(self._target, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: _Target, deadline: float) -> None:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(target.host, target.port, context=context)
        # Kept under our own name: http.client's `_context` is private and not in its types.
        self._tls = context
        self._target = target
        self._deadline = deadline

    def connect(self) -> None:
        raw = _open_socket(self._target, self._deadline)
        try:
            raw.settimeout(_remaining(self._deadline))
            # The certificate is checked against the URL's host, not the address we dialled.
            wrapped = self._tls.wrap_socket(raw, server_hostname=self._target.host)
        except BaseException:
            raw.close()
            raise
        # The context's sslsocket_class makes every socket it wraps one of ours.
        sock = cast(_DeadlineSSLSocket, wrapped)
        sock.deadline = self._deadline
        self.sock = sock


def _exchange(
    method: str,
    target: _Target,
    body: bytes | None,
    headers: dict[str, str],
    policy: FetchPolicy,
    deadline: float,
    follow_redirects: bool,
    sink: IO[bytes] | None = None,
    excerpt: int | None = None,
) -> HttpResponse:
    """One request and its response on a fresh connection to the pinned address."""
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target, deadline)
    try:
        conn.request(method, target.path, body=body, headers={**headers, "Connection": "close"})
        # The response owns the socket once the server says it will close; close it ourselves.
        with conn.getresponse() as response:
            names: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                names[key] = f"{names[key]}, {value}" if key in names else value
            payload = b""
            # A redirect we are about to follow has nothing worth downloading.
            if not (
                follow_redirects and response.status in REDIRECT_STATUSES and "location" in names
            ):
                payload = _read_body(response, policy, deadline, sink, excerpt)
            return HttpResponse(response.status, names, payload, "")
    except TimeoutError:
        verb = "download" if method == "GET" else "request"
        raise FetchFailed(
            f"The {verb} took longer than {policy.timeout:g} s.", timed_out=True
        ) from None
    except ssl.SSLCertVerificationError:
        raise FetchFailed(f"The TLS certificate of {target.host} could not be verified.") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise FetchFailed(f"The request to {target.host} failed ({reason}).") from None
    finally:
        conn.close()


def _read_body(
    response: http.client.HTTPResponse,
    policy: FetchPolicy,
    deadline: float,
    sink: IO[bytes] | None = None,
    excerpt: int | None = None,
) -> bytes:
    """The body (b"" when it went to `sink`), capped at the policy's bytes and deadline.

    With `excerpt`, only the body's first `excerpt` bytes: the rest is never read (the
    connection then closes), and a longer body is no failure.
    """
    too_large = FetchFailed(f"The download is larger than {_size(policy.max_bytes)}.")
    if excerpt is None and response.length is not None and response.length > policy.max_bytes:
        raise too_large
    chunks: list[bytes] = []
    received = 0
    while excerpt is None or received < excerpt:
        _remaining(deadline)
        # read1 returns what one receive brought, so the deadline is checked between drips.
        chunk = response.read1(
            CHUNK_SIZE if excerpt is None else min(CHUNK_SIZE, excerpt - received)
        )
        if not chunk:
            break
        received += len(chunk)
        if excerpt is None and received > policy.max_bytes:
            raise too_large
        if sink is None:
            chunks.append(chunk)
        else:
            sink.write(chunk)
    return b"".join(chunks)


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.3g} MiB"
    if n >= 1024:
        return f"{n / 1024:.3g} KiB"
    return f"{n} bytes"
