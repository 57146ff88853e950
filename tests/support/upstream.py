#!/usr/bin/env python3
"""Test upstream for agentgw's integration tests.

A small HTTP/1.1 server (Python 3.11 standard library only) that plays the part of the
third-party APIs the gateway forwards to (SPEC.md §3.2). Integration tests start it as a
child process, read the port it prints, point a service's `base_url` at it and then
check both what the agent got back and what actually arrived upstream.

Command line:

    python3 tests/support/upstream.py [--tls DIR] [--record FILE]
    python3 tests/support/upstream.py --make-ca DIR

  * Listens on 127.0.0.1 with a kernel-chosen port and prints exactly one line,
    `listening <port>`, to stdout once it accepts connections. Nothing else is written to
    stdout. It then serves until SIGTERM or SIGINT and exits 0 without a traceback.
  * `--tls DIR` first generates, with the `openssl` command, a throw-away CA and a server
    certificate (EC P-256, valid for one day) into DIR: ca.pem, ca.key, server.pem,
    server.key. The server certificate names IP:127.0.0.1 and DNS:localhost. The server
    then speaks HTTPS only; tests give the gateway DIR/ca.pem as the service's `ca_file`.
  * `--make-ca DIR` only generates those four files and exits 0, e.g. to get an
    unrelated "wrong" CA for a verification-failure test.
  * `--record FILE` appends one JSON line per received request (written and flushed
    before the answer is sent, so a test that has its response can read the line):

        {"method": "POST", "target": "/echo/x?a=1", "path": "/echo/x",
         "query": {"a": ["1"]}, "headers": [["Host", "127.0.0.1:4711"], ...],
         "body": "<body bytes decoded as latin-1>", "body_len": 3, "peer_port": 50312}

    `headers` keeps the received order and the original spelling of names; `peer_port` is
    the client's port, which tells one connection from another. A request whose
    body could not be read (bad chunked framing, short body) gets an extra "error" field.
    Request lines the standard library itself rejects (e.g. malformed) are not recorded.
    A request with the query parameter `record_pieces` and a chunked body also gets a line
    {"piece": "<chunk data as latin-1>", "path": ...} for each chunk as it arrives, before
    the rest of the body is read.

Endpoints (any method unless noted; /v1/... paths match exactly, the others by prefix;
query parameters are parsed with urllib.parse; a bad parameter gets 400 JSON):

  /echo...                200 JSON {"method","target","path","query","headers","body"};
                          headers as {lower-cased name: value}, repeated names joined
                          with ", ". HEAD gets the same headers and no body.
  /status/<code>          that status (200..599) with {"status": code}; 204/304 no body.
  /redirect[?back=1]      302, Location: /echo/redirected, small JSON body. With back=1
                          the request's own target goes back in Location, Content-Location
                          and Link (as servers that keep the query on a redirect do).
  /sse?events=N&interval_ms=M[&type=T][&length=1]
                          text/event-stream, chunked; N events `data: {"n": i}` (i = 0..N-1)
                          M ms apart, each in its own chunk. Defaults N=3, M=100. With
                          type=T the same pieces under Content-Type T; with length=1 under a
                          Content-Length for them all instead of chunked (a slow answer of
                          known length). With watch=1 it watches the connection between
                          events, as /stall does.
  /large?bytes=N[&chunked=1]
                          N bytes of application/octet-stream, byte i = i % 251, sent in
                          64 KiB writes; Content-Length, or chunked with chunked=1.
                          Default N = 1 MiB.
  /stall?secs=S           reads the request, sleeps S seconds (default 1, fractions
                          allowed, also for /stall-body), then answers 200 JSON. With
                          watch=1 it watches the connection meanwhile, and when the client
                          closes it, records {"gone": path, "after": seconds} and stops.
  /stall-body?secs=S      200 with Content-Length 100, sends 10 bytes, sleeps S seconds,
                          then the other 90.
  /early-answer?bytes=N&secs=S
                          413 with N bytes of octet-stream (default 256 KiB) before reading
                          any of the request body, which it never reads; holds the
                          connection S seconds (default 1), then closes it. Not recorded.
  /big-head?bytes=N       200 JSON with a header X-Pad of N bytes ("a"s). Default N=1000.
  /bad-head?kind=K        200 JSON whose head holds a malformed field: K=name gives
                          "Bad Name: x", K=cr a value with a bare CR ("a\rb"). The
                          connection is closed after it.
  /head-body              200 announcing a text/plain body, which it sends 100 ms after the
                          head even to a HEAD, as an upstream that honoured a method
                          override (HEAD with X-HTTP-Method-Override: GET) would; the body
                          is itself a whole response ("forged"). The connection stays open.
  /te-and-length          Transfer-Encoding: chunked together with Content-Length: 5, and a
                          chunked body of 26 bytes ("abcdefghijklmnopqrstuvwxyz"). Closed after.
  /interim?count=N&interval_ms=M
                          N interim "102 Processing" responses M ms apart (the first at
                          once), then 200 JSON. Defaults N=3, M=100.
  /switch?bytes=N&secs=S  101 Switching Protocols that nobody asked for, then N bytes
                          (default 100000), then holds the connection S seconds (default
                          10) and closes it.
  /reset?after=N          200 announcing Content-Length 1000000, sends N bytes, then resets
                          the TCP connection (SO_LINGER 0 + close) after a 50 ms pause.
                          Default N = 1000.
  /v1/chat/completions    POST, JSON body. {"stream": true} gets OpenAI-style SSE
                          chat.completion.chunk events spelling "Hello from the test
                          upstream", a final chunk with finish_reason "stop" (plus a usage
                          chunk if stream_options.include_usage) and `data: [DONE]`;
                          otherwise a chat.completion object. "model" is echoed.
  /v1/models              GET: a one-model list ("test-model").
  anything else           404 JSON.

Every non-streaming answer carries Content-Length, request bodies are read in full
(Content-Length or chunked; all but by /early-answer), so connections stay usable for
keep-alive. Each connection is
served by its own thread. Clients going away mid-answer are ignored silently; only
unexpected exceptions are printed to stderr.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# --------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------

# A self-contained OpenSSL config, so the result does not depend on the system's
# openssl.cnf defaults (which differ between distributions and OpenSSL versions).
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = agentgw test (each certificate's -subj replaces it)

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def _openssl(*args: str) -> None:
    """Runs one openssl command; raises with its stderr on failure."""
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: str) -> None:
    """Writes ca.pem/ca.key (a fresh test CA) and server.pem/server.key (signed by it)."""
    os.makedirs(directory, exist_ok=True)
    ca_key = os.path.join(directory, "ca.key")
    ca_pem = os.path.join(directory, "ca.pem")
    server_key = os.path.join(directory, "server.key")
    server_pem = os.path.join(directory, "server.pem")
    with tempfile.TemporaryDirectory() as scratch:
        config = os.path.join(scratch, "openssl.cnf")
        csr = os.path.join(scratch, "server.csr")
        with open(config, "w") as f:
            f.write(_OPENSSL_CONFIG)
        for key in (ca_key, server_key):
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", key)
            os.chmod(key, 0o600)
        _openssl("req", "-new", "-x509", "-config", config, "-extensions", "v3_ca",
                 "-key", ca_key, "-subj", f"/CN=agentgw test CA {os.getpid()}-{time.time_ns()}",
                 "-sha256", "-days", "1", "-out", ca_pem)
        _openssl("req", "-new", "-config", config, "-key", server_key,
                 "-subj", "/CN=localhost", "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                 "-sha256", "-days", "1", "-extfile", config, "-extensions", "v3_server",
                 "-out", server_pem)


# --------------------------------------------------------------------------------------
# Request recording
# --------------------------------------------------------------------------------------


class Recorder:
    """Appends one JSON line per request to a file; safe to use from many threads."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="ascii")
        self._lock = threading.Lock()

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


# --------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------

# The /large pattern: byte i is i % 251. A 64 KiB write starting at offset o is the slice
# PATTERN[o % 251 : o % 251 + 64 KiB], so one buffer of 64 KiB + 251 bytes serves all.
LARGE_WRITE = 64 * 1024
_PATTERN = memoryview(bytes(i % 251 for i in range(LARGE_WRITE + 251)))

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

CHAT_PIECES = ["Hello", " from", " the test", " upstream"]
CHAT_TEXT = "".join(CHAT_PIECES)
CHAT_CREATED = 1700000000


class BadRequest(Exception):
    """A request (body framing or parameter) this server refuses with 400."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentgw-test-upstream/1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus delayed
    # ACKs would add ~40 ms to every keep-alive exchange and delay SSE events.
    disable_nagle_algorithm = True

    server: "UpstreamServer"

    # Every method (GET, POST, PATCH, OPTIONS, even made-up ones) goes to _dispatch;
    # BaseHTTPRequestHandler looks the handler up as do_<METHOD>.
    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        """Request logging is off; real failures reach UpstreamServer.handle_error."""

    # ---- reading the request --------------------------------------------------------

    def _read_body(self) -> bytes:
        """Reads the whole request body (chunked or Content-Length framed)."""
        transfer_encoding = self.headers.get_all("Transfer-Encoding") or []
        codings = [c.strip().lower() for v in transfer_encoding for c in v.split(",") if c.strip()]
        if codings:
            if codings[-1] != "chunked":
                raise BadRequest("unsupported Transfer-Encoding")
            return self._read_chunked()
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(set(v.strip() for v in lengths)) != 1 or not lengths[0].strip().isdigit():
            raise BadRequest("invalid Content-Length")
        length = int(lengths[0])
        body = self.rfile.read(length)
        if len(body) != length:
            self._body_parts.append(body)
            raise BadRequest("request body shorter than Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        """Decodes a chunked request body, including chunk extensions and trailers."""
        parts = self._body_parts
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BadRequest("truncated chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise BadRequest(f"bad chunk size {size_text!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            data = self.rfile.read(size)
            parts.append(data)
            if len(data) != size:
                raise BadRequest("truncated chunk")
            if "record_pieces" in self.req_query and self.server.recorder is not None:
                self.server.recorder.write({"piece": data.decode("latin-1"), "path": self.req_path})
            if self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                raise BadRequest("missing CRLF after chunk data")
        # Trailer section: header lines up to an empty line; ignored.
        while True:
            line = self.rfile.readline(8192)
            if not line.endswith(b"\n"):
                raise BadRequest("truncated chunked trailer")
            if line in (b"\r\n", b"\n"):
                break
        return b"".join(parts)

    # ---- dispatch ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        self.req_path = split.path
        self.req_query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        self.is_head = self.command == "HEAD"
        self._body_parts: list[bytes] = []  # what was read so far, for the record on errors

        if self.req_path.startswith("/early-answer"):
            return self._early_answer()  # before reading any of the body, on purpose

        body_error = None
        try:
            body = self._read_body()
        except BadRequest as e:
            body, body_error = b"".join(self._body_parts), str(e)
        self.req_body = body

        if self.server.recorder is not None:
            entry = {
                "method": self.command,
                "target": self.path,
                "path": self.req_path,
                "query": self.req_query,
                "headers": [[name, value] for name, value in self.headers.items()],
                "body": body.decode("latin-1"),
                "body_len": len(body),
                "peer_port": self.client_address[1],
            }
            if body_error is not None:
                entry["error"] = body_error
            self.server.recorder.write(entry)

        if body_error is not None:
            # The rest of the stream cannot be trusted: answer and close.
            self.close_connection = True
            self._send_json(400, {"error": "bad_request", "message": body_error}, close=True)
            return

        path = self.req_path
        routes = [
            ("/echo", self._echo),
            ("/status/", self._status),
            ("/redirect", self._redirect),
            ("/sse", self._sse),
            ("/large", self._large),
            ("/stall-body", self._stall_body),
            ("/stall", self._stall),
            ("/interim", self._interim),
            ("/big-head", self._big_head),
            ("/bad-head", self._bad_head),
            ("/te-and-length", self._te_and_length),
            ("/head-body", self._head_body),
            ("/reset", self._reset),
            ("/switch", self._switch),
        ]
        try:
            if path == "/v1/chat/completions":
                return self._chat_completions()
            if path == "/v1/models":
                return self._models()
            for prefix, handler in routes:
                if path.startswith(prefix):
                    return handler()
            self._send_json(404, {"error": "not_found", "path": path})
        except BadRequest as e:
            self._send_json(400, {"error": "bad_request", "message": str(e)})

    # ---- response helpers -------------------------------------------------------------

    def _int_param(self, name: str, default: int, low: int = 0, high: int = 1 << 62) -> int:
        values = self.req_query.get(name)
        if not values:
            return default
        try:
            value = int(values[-1])
        except ValueError:
            raise BadRequest(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise BadRequest(f"{name} must be between {low} and {high}")
        return value

    def _float_param(self, name: str, default: float) -> float:
        values = self.req_query.get(name)
        if not values:
            return default
        try:
            value = float(values[-1])
        except ValueError:
            raise BadRequest(f"{name} must be a number") from None
        if not 0 <= value <= 24 * 3600:
            raise BadRequest(f"{name} out of range")
        return value

    def _send_body(self, status: int, body: bytes, content_type: str,
                   extra_headers: list[tuple[str, str]] = (), close: bool = False) -> None:
        """A complete answer with Content-Length (no body bytes for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if not self.is_head:
            self.wfile.write(body)

    def _send_json(self, status: int, obj, extra_headers: list[tuple[str, str]] = (),
                   close: bool = False) -> None:
        body = json.dumps(obj).encode()
        self._send_body(status, body, "application/json", extra_headers, close)

    def _begin_stream(self, status: int, content_type: str,
                      extra_headers: list[tuple[str, str]] = ()) -> None:
        """Sends headers for a body of unknown length: chunked for HTTP/1.1 clients,
        close-delimited for HTTP/1.0 ones (which do not understand chunked)."""
        self.chunked = self.request_version != "HTTP/1.0"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in extra_headers:
            self.send_header(name, value)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()

    def _write_chunk(self, data) -> None:
        """One chunk of a streamed body (written and sent immediately)."""
        if self.is_head or not data:
            return
        if self.chunked:
            self.wfile.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        else:
            self.wfile.write(data)

    def _end_stream(self) -> None:
        if self.is_head:
            return
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")

    # ---- endpoints --------------------------------------------------------------------

    def _echo(self) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._send_json(200, {
            "method": self.command,
            "target": self.path,
            "path": self.req_path,
            "query": self.req_query,
            "headers": headers,
            "body": self.req_body.decode("latin-1"),
        })

    def _status(self) -> None:
        text = self.req_path[len("/status/"):].strip("/")
        if not text.isdigit() or not 200 <= int(text) <= 599:
            raise BadRequest("status code must be 200..599")
        code = int(text)
        if code in (204, 304):
            # No body allowed; no Content-Length needed for keep-alive either.
            self.send_response(code)
            self.end_headers()
            return
        self._send_json(code, {"status": code})

    def _redirect(self) -> None:
        if self.req_query.get("back") == ["1"]:
            target = "http://upstream.test" + self.path
            self._send_json(302, {"redirect": "back"},
                            [("Location", target), ("Content-Location", target),
                             ("Link", '<' + target + '>; rel="next"'),
                             ("Link", '</other>; rel="prev"')])
            return
        self._send_json(302, {"redirect": "/echo/redirected"},
                        [("Location", "/echo/redirected")])

    def _sse(self) -> None:
        events = self._int_param("events", 3, 0, 1_000_000)
        interval = self._int_param("interval_ms", 100, 0, 3_600_000) / 1000.0
        content_type = self.req_query.get("type", ["text/event-stream"])[0]
        pieces = [b"data: %s\n\n" % json.dumps({"n": i}).encode() for i in range(events)]
        if self._int_param("length", 0, 0, 1):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(sum(len(p) for p in pieces)))
            self.end_headers()
            for i, piece in enumerate(pieces):
                if i > 0 and interval and not self._wait(interval):
                    return
                if not self.is_head:
                    self.wfile.write(piece)
            return
        self._begin_stream(200, content_type, [("Cache-Control", "no-cache")])
        for i, piece in enumerate(pieces):
            if i > 0 and interval and not self._wait(interval):
                return
            self._write_chunk(piece)
        self._end_stream()

    def _large(self) -> None:
        total = self._int_param("bytes", 1024 * 1024)
        chunked = self.req_query.get("chunked", ["0"])[-1] not in ("", "0", "false")
        if chunked:
            self._begin_stream(200, "application/octet-stream")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
        if not self.is_head:
            offset = 0
            while offset < total:
                n = min(LARGE_WRITE, total - offset)
                start = offset % 251
                piece = _PATTERN[start:start + n]
                if chunked:
                    self._write_chunk(piece)
                else:
                    self.wfile.write(piece)
                offset += n
        if chunked:
            self._end_stream()

    def _early_answer(self) -> None:
        """Answers 413 with a body of `bytes` bytes without reading the request body, then
        holds the connection `secs` seconds before closing it: an upstream refusing a large
        upload. Not recorded (the body was never read)."""
        size = self._int_param("bytes", 256 * 1024, 0, 64 << 20)
        body = (bytes(_PATTERN) * (size // len(_PATTERN) + 1))[:size]
        self.close_connection = True
        self.send_response(413)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        time.sleep(self._float_param("secs", 1.0))

    def _wait(self, secs: float) -> bool:
        """Sleeps `secs` seconds. With watch=1 it watches the connection meanwhile: when the
        client closes it, records {"gone": path, "after": seconds} and returns False at once."""
        if "watch" not in self.req_query:
            time.sleep(secs)
            return True
        started = time.monotonic()
        while (left := secs - (time.monotonic() - started)) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if not readable:
                continue
            try:
                gone = self.connection.recv(1, socket.MSG_PEEK) == b""
            except ConnectionResetError:
                gone = True
            if not gone:
                time.sleep(left)  # bytes sent ahead: the client is there, and stays readable
                return True
            if self.server.recorder is not None:
                self.server.recorder.write({"gone": self.req_path,
                                            "after": time.monotonic() - started})
            self.close_connection = True
            return False
        return True

    def _stall(self) -> None:
        if self._wait(self._float_param("secs", 1.0)):
            self._send_json(200, {"stalled": True})

    def _big_head(self) -> None:
        size = self._int_param("bytes", 1000, 0, 1_000_000)
        self._send_json(200, {"padded": size}, [("X-Pad", "a" * size)])

    def _raw_answer(self, head: bytes, body: bytes) -> None:
        """Writes a response exactly as given, then closes the connection."""
        self.close_connection = True
        self.wfile.write(head + body)
        self.wfile.flush()

    def _bad_head(self) -> None:
        kind = self.req_query.get("kind", ["name"])[-1]
        field = {"name": b"Bad Name: x", "cr": b"X-Bad: a\rb"}.get(kind)
        if field is None:
            return self._send_json(400, {"error": "kind is name or cr"})
        body = b'{"bad": true}'
        self._raw_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + field +
                         b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
                         body)

    def _head_body(self) -> None:
        forged = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nforged"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(forged)))
        self.end_headers()
        self.wfile.flush()
        time.sleep(0.1)
        self.wfile.write(forged)
        self.wfile.flush()

    def _te_and_length(self) -> None:
        self._raw_answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n",
                         b"d\r\nabcdefghijklm\r\nd\r\nnopqrstuvwxyz\r\n0\r\n\r\n")

    def _interim(self) -> None:
        count = self._int_param("count", 3, 0, 1000)
        interval = self._int_param("interval_ms", 100, 0, 3_600_000) / 1000.0
        for i in range(count):
            if i > 0 and interval:
                time.sleep(interval)
            self.wfile.write(b"HTTP/1.1 102 Processing\r\n\r\n")
            self.wfile.flush()
        if interval:
            time.sleep(interval)
        self._send_json(200, {"interim": count})

    def _switch(self) -> None:
        size = self._int_param("bytes", 100_000, 0, 10_000_000)
        self.close_connection = True
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: x-test\r\n\r\n" + b"s" * size)
        self.wfile.flush()
        time.sleep(self._float_param("secs", 10.0))

    def _stall_body(self) -> None:
        secs = self._float_param("secs", 1.0)
        body = b"0123456789" * 10
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.is_head:
            return
        self.wfile.write(body[:10])
        time.sleep(secs)
        self.wfile.write(body[10:])

    def _reset(self) -> None:
        after = self._int_param("after", 1000, 0, 999_999)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        offset = 0
        while offset < after:
            n = min(LARGE_WRITE, after - offset)
            start = offset % 251
            self.wfile.write(_PATTERN[start:start + n])
            offset += n
        # Give the peer a moment to take in those bytes: a reset makes its kernel drop
        # whatever it has not read yet.
        time.sleep(0.05)
        # Abort: SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        # rfile holds a reference to the socket, so it must go first for close() to be real.
        self.close_connection = True
        sock = self.request
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        sock.close()

    def _chat_completions(self) -> None:
        if self.command != "POST":
            self._send_json(405, _openai_error("Method not allowed"), [("Allow", "POST")])
            return
        try:
            request = json.loads(self.req_body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._send_json(400, _openai_error("request body must be a JSON object"))
            return
        model = request.get("model") if isinstance(request.get("model"), str) else "test-model"
        usage = {"prompt_tokens": 5, "completion_tokens": len(CHAT_PIECES),
                 "total_tokens": 5 + len(CHAT_PIECES)}

        if request.get("stream") is not True:
            self._send_json(200, {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": CHAT_CREATED,
                "model": model,
                "system_fingerprint": None,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": CHAT_TEXT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }],
                "usage": usage,
            })
            return

        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(choices: list, **extra) -> None:
            obj = {"id": "chatcmpl-test", "object": "chat.completion.chunk",
                   "created": CHAT_CREATED, "model": model, "system_fingerprint": None,
                   "choices": choices, **extra}
            if include_usage and "usage" not in extra:
                obj["usage"] = None
            data = json.dumps(obj, separators=(",", ":")).encode()
            self._write_chunk(b"data: " + data + b"\n\n")

        content_type = self.req_query.get("type", ["text/event-stream"])[0]
        self._begin_stream(200, content_type, [("Cache-Control", "no-cache")])
        for i, piece in enumerate(CHAT_PIECES):
            if i > 0:
                time.sleep(0.05)
            chunk([{"index": 0, "delta": {"role": "assistant", "content": piece},
                    "logprobs": None, "finish_reason": None}])
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if include_usage:
            chunk([], usage=usage)
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _models(self) -> None:
        if self.command not in ("GET", "HEAD"):
            self._send_json(405, _openai_error("Method not allowed"), [("Allow", "GET")])
            return
        self._send_json(200, {"object": "list", "data": [
            {"id": "test-model", "object": "model", "created": CHAT_CREATED, "owned_by": "test"},
        ]})


def _openai_error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error",
                      "param": None, "code": None}}


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


class UpstreamServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default of 5 drops SYNs when many clients connect at once

    def __init__(self, recorder: Recorder | None, tls: ssl.SSLContext | None) -> None:
        self.recorder = recorder
        self.tls = tls
        super().__init__(("127.0.0.1", 0), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can hang
        # on machines without working DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address) -> None:
        # Runs in the connection's own thread, so a slow or failing TLS handshake never
        # holds up accept() for other clients.
        if self.tls is not None:
            request.settimeout(10)
            request.do_handshake()
            request.settimeout(None)
        super().finish_request(request, client_address)

    def get_request(self):
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        # Peers that disconnect, reset, time out or fail the TLS handshake (e.g. because
        # they do not trust our CA) are part of the tests, not errors of this server.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def make_tls_context(directory: str) -> ssl.SSLContext:
    make_certificates(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(directory, "server.pem"),
                            os.path.join(directory, "server.key"))
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Stop(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="agentgw test upstream (see module docstring)")
    parser.add_argument("--tls", metavar="DIR", help="generate a CA and server cert in DIR, serve HTTPS")
    parser.add_argument("--record", metavar="FILE", help="append one JSON line per request to FILE")
    parser.add_argument("--make-ca", metavar="DIR", help="only generate the certificates in DIR")
    args = parser.parse_args(argv)

    # From here on SIGTERM/SIGINT end the process quietly with status 0.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        try:
            if args.make_ca:
                make_certificates(args.make_ca)
                return 0
            tls = make_tls_context(args.tls) if args.tls else None
            recorder = Recorder(args.record) if args.record else None
            server = UpstreamServer(recorder, tls)
        except (OSError, RuntimeError, ssl.SSLError) as e:
            print(f"upstream: {e}", file=sys.stderr)
            return 1
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()
    except _Stop:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    # Handler threads may still be mid-answer (daemon threads); leave without waiting for
    # them or letting interpreter shutdown trip over them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
