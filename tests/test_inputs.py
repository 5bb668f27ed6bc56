"""Input images: base64 and URLs decode to RGB, bad or huge ones are a 400 naming the field."""

from __future__ import annotations

import base64
import io
import resource
import socketserver
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from generation.inputs import InputImageError, load_image, open_image, store_image
from generation.safe_http import FetchPolicy


def _png(width: int = 24, height: int = 16, color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _bilevel_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG built chunk by chunk, so the test never holds the pixels either."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_it_decodes_base64_with_and_without_a_data_url_prefix():
    text = base64.b64encode(_png(24, 16)).decode()
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    for value in (text, f"data:image/png;base64,{text}", f"  {wrapped}\n"):
        image = load_image(value, is_base64=True, field="init_image")
        assert (image.size, image.mode) == ((24, 16), "RGB")
        assert image.getpixel((0, 0)) == (200, 30, 60)


def test_it_takes_a_data_url_even_when_the_request_did_not_say_base64():
    text = base64.b64encode(_png(8, 8)).decode()
    image = load_image(f"data:image/png;base64,{text}", is_base64=False, field="mask_image")
    assert image.size == (8, 8)


def test_it_names_the_field_when_base64_is_garbage():
    with pytest.raises(InputImageError) as error:
        load_image("this is *not* base64!", is_base64=True, field="init_image")
    assert str(error.value) == "init_image is not valid base64."


def test_it_names_the_field_when_the_bytes_are_not_an_image():
    text = base64.b64encode(b"%PDF-1.4 definitely not a picture").decode()
    with pytest.raises(InputImageError) as error:
        load_image(text, is_base64=True, field="mask_image")
    assert str(error.value) == "mask_image is not a readable image."


def test_it_refuses_a_truncated_image():
    text = base64.b64encode(_png(64, 64)[:60]).decode()
    with pytest.raises(InputImageError, match="init_image is not a readable image"):
        load_image(text, is_base64=True, field="init_image")


def test_it_refuses_a_decompression_bomb_without_allocating_it():
    bomb = _bilevel_png(20000, 20000)
    assert len(bomb) < 200_000  # tiny on the wire, 400 MB once decoded
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(InputImageError, match="init_image is too large"):
        load_image(base64.b64encode(bomb).decode(), is_base64=True, field="init_image")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_after - peak_before < 100 * 1024


def test_it_refuses_more_pixels_than_the_setting_allows(settings):
    settings.PICTOR_INPUT_MAX_PIXELS = 4096 * 4096
    text = base64.b64encode(_bilevel_png(5000, 5000)).decode()
    with pytest.raises(InputImageError) as error:
        load_image(text, is_base64=True, field="control_image")
    assert str(error.value) == "control_image is too large: 5000×5000 pixels, at most 16777216."


def test_it_refuses_what_pillow_only_warns_about():
    # 10000×10000 sits between Pillow's warning and error limits; a warning must refuse too.
    text = base64.b64encode(_bilevel_png(10000, 10000)).decode()
    with pytest.raises(InputImageError, match="init_image is too large"):
        load_image(text, is_base64=True, field="init_image", max_pixels=200_000_000)


def test_it_applies_the_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buffer, format="JPEG", exif=exif)
    image = load_image(base64.b64encode(buffer.getvalue()).decode(), is_base64=True, field="x")
    assert image.size == (20, 40)


@pytest.fixture
def image_server() -> Iterator[tuple[int, dict[str, bytes]]]:
    """A real HTTP server on 127.0.0.1 serving the bytes put into its dict by path."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def server_bind(self) -> None:
            # Skip HTTPServer's reverse DNS lookup of the bound address.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = "localhost", self.server_address[1]

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield server.server_address[1], files
    server.shutdown()
    server.server_close()


def _local(port: int) -> FetchPolicy:
    return FetchPolicy(allowed_ports=(port,), allowed_networks=("127.0.0.0/8",))


def test_it_fetches_an_image_url(image_server):
    port, files = image_server
    files["/cat.png"] = _png(30, 20, (1, 2, 3))
    image = load_image(
        f"http://127.0.0.1:{port}/cat.png", is_base64=False, field="init_image", policy=_local(port)
    )
    assert (image.size, image.getpixel((5, 5))) == ((30, 20), (1, 2, 3))


def test_it_names_the_field_when_the_url_fails(image_server):
    port, _ = image_server
    with pytest.raises(InputImageError) as missing:
        load_image(
            f"http://127.0.0.1:{port}/gone.png",
            is_base64=False,
            field="init_image",
            policy=_local(port),
        )
    assert str(missing.value) == "init_image: The server answered 404."


def test_it_refuses_an_internal_url_with_the_default_policy(image_server, settings):
    port, files = image_server
    files["/cat.png"] = _png()
    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, port)
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ()
    with pytest.raises(InputImageError) as error:
        load_image(f"http://127.0.0.1:{port}/cat.png", is_base64=False, field="mask_image")
    assert str(error.value) == (
        "mask_image: The URL's address 127.0.0.1 is not allowed "
        "(private, loopback or reserved network)."
    )


def test_it_stores_and_reopens_an_image(media_dir):
    original = Image.new("RGB", (12, 9), (10, 20, 30))
    original.putpixel((3, 4), (250, 0, 5))
    name = store_image(original, organization_id=7, name="init_image")
    assert name.startswith("inputs/7/") and name.endswith("/init_image.png")
    stored = media_dir / name
    assert stored.read_bytes().startswith(b"\x89PNG")
    again = open_image(name)
    assert (again.mode, again.size) == ("RGB", (12, 9))
    assert list(again.getdata()) == list(original.getdata())
