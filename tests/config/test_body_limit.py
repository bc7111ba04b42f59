"""A request body past API_MAX_BODY_BYTES is refused with 413 before it is read: from its Content-Length on a live
server, and as soon as a body without one passes the limit."""
import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 64 << 10


@pytest.fixture
def small_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


def connect(base_url: str) -> socket.socket:
    address = urlsplit(base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def post_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/billing/topups", "/accounts/login/"])
def test_a_declared_body_past_the_limit_gets_413_before_it_is_sent(base_url, path):
    """300 MB declared, 1 KB sent: the answer comes at once, without authentication and without the rest."""
    with connect(base_url) as sock:
        sock.sendall(post_head(path, f"Content-Length: {300 << 20}\r\n") + b"{" + b" " * 1023)
        status, headers, body = read_response(sock)
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and "8,388,608 bytes (API_MAX_BODY_BYTES)" in error["message"]
    assert headers["content-type"] == "application/json" and headers["x-request-id"].startswith("req_")


def test_a_chunked_body_is_refused_once_it_passes_the_limit(base_url, small_limit):
    chunk = b"x" * (16 << 10)
    with connect(base_url) as sock:
        sock.sendall(post_head("/v1/chat/completions", "Transfer-Encoding: chunked\r\n"))
        for _ in range(LIMIT // len(chunk) + 2):  # just past the limit; the rest is never sent
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _, body = read_response(sock)
    assert status == 413 and f"{LIMIT:,} bytes" in json.loads(body)["error"]["message"]


def test_a_body_within_the_limit_reaches_the_endpoint(base_url, small_limit):
    payload = json.dumps({"model": "x", "messages": [{"role": "user", "content": "y" * (LIMIT - 200)}]}).encode()
    with connect(base_url) as sock:
        sock.sendall(post_head("/v1/chat/completions", f"Content-Length: {len(payload)}\r\n") + payload)
        status, _, body = read_response(sock)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"  # it was read, then judged


def test_reading_stops_at_the_limit(small_limit):
    """Through the ASGI application itself: a body of 200 chunks without Content-Length is read only up to the
    limit (plus the one chunk that passed it)."""
    from config.asgi import application

    chunk = b"x" * (16 << 10)
    read = 0
    sent = []

    async def receive():
        nonlocal read
        read += 1
        if read > 200:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": read < 200}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(application(scope, receive, send))
    assert read * len(chunk) <= LIMIT + len(chunk)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
