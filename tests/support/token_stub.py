#!/usr/bin/env python3
"""Scripted OAuth 2.0 token endpoint for agentgw's OAuth2 integration tests.

The real authorization server of the tests (tests/node/oidc_server.mjs, oidc-provider) never
answers `slow_down`, names no polling `interval` and cannot be told to fail on cue. This stub
(Python 3 standard library only) answers from a script instead, so a test can drive the
daemon's device-flow poller and refresher through every answer of RFC 8628 §3.5 and
RFC 6749 §5.2, and records when each request came, so a test can check the polling interval.

Command line:

    python3 tests/support/token_stub.py [--device-script ITEMS] [--refresh-script ITEMS]
                                        [--interval SECS] [--expires-in SECS]
                                        [--token-expires-in SECS]

  * Listens on 127.0.0.1 with a kernel-chosen port and prints exactly one line, `listening
    <port>`, to stdout once it accepts connections. Serves until SIGTERM or SIGINT, exits 0.
  * ITEMS is a comma-separated list of answers, used one per request in order; the last one
    repeats once the list is used up. --device-script answers device_code polls (default
    "pending"), --refresh-script answers refresh_token and client_credentials requests
    (default "tokens"). Answers:
        pending        400 {"error": "authorization_pending"}
        slow_down      400 {"error": "slow_down"}
        denied         400 {"error": "access_denied"}
        expired        400 {"error": "expired_token"}
        invalid_grant  400 {"error": "invalid_grant"}
        http500        500 {} (no OAuth error: a failure that is safe to repeat)
        unavailable    503 {"error": "temporarily_unavailable"}
        busy           400 {"error": "temporarily_unavailable"}
        tokens         200 {"access_token": "stub-access-N", "refresh_token":
                       "stub-refresh-N", "token_type": "Bearer", "expires_in": SECS}
        slow_tokens    the same after 2 seconds (a refresh that others must wait for)
        slow_denied    denied after 2 seconds (a failing refresh still under way a while)
        access_only    200 as tokens, without a refresh_token (the client keeps its own)
        split_tokens   200 as tokens, with "\r\nX-Injected: 1" at the end of the access token
        slow_pending   pending after 3 seconds (a poll still under way a while)
        long_invalid_grant  400 invalid_grant with a 301-byte error_description of "x" and
                       150 two-byte characters
        quoting_invalid_grant  400 invalid_grant whose error_description quotes the secret
                       the request carried (refresh_token, else device_code, else
                       client_secret) twice: once at the start, once from byte 195 on
  * --interval: the `interval` of the device authorization answer (default 1; 0 leaves it
    out). --expires-in: its `expires_in` (default 600). --token-expires-in: the `expires_in`
    of the tokens answers (default 3600).

Endpoints:
  POST /device            device authorization: {"device_code": "stub-device-N", "user_code":
                          "STUB-000N", "verification_uri", "verification_uri_complete",
                          "expires_in", "interval"}.
  POST /token             answers from the scripts (form-encoded body, grant_type decides).
  POST /__script          JSON {"device": [ITEM...]?, "refresh": [ITEM...]?} replaces scripts.
  POST /__revoke          forgets every access token issued so far (/resource refuses them).
  GET  /__requests        {"requests": [{"path", "grant_type", "time", "form"}]}: every
                          /device and /token request, oldest first; time is time.monotonic()
                          of this process (seconds), form the decoded form fields.
  ANY  /resource...       200 {"ok": true} for Authorization: Bearer stub-access-N issued by
                          this stub, else 401 {"error": "invalid_token"}.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.parse

ANSWERS = {
    "pending": (400, {"error": "authorization_pending"}),
    "slow_down": (400, {"error": "slow_down"}),
    "denied": (400, {"error": "access_denied", "error_description": "the user said no"}),
    "expired": (400, {"error": "expired_token"}),
    "invalid_grant": (400, {"error": "invalid_grant",
                            "error_description": "the refresh token was revoked"}),
    "http500": (500, {}),
    "unavailable": (503, {"error": "temporarily_unavailable"}),
    "busy": (400, {"error": "temporarily_unavailable"}),
    # A description of 301 bytes, "x" then 150 two-byte characters: cut at 200 bytes, it
    # splits one.
    "long_invalid_grant": (400, {"error": "invalid_grant",
                                 "error_description": "x" + "\u00e9" * 150}),
}


def check_items(items: list[str]) -> list[str]:
    for item in items:
        if item not in ANSWERS and item not in ("tokens", "slow_tokens", "access_only",
                                                "split_tokens", "slow_pending", "slow_denied",
                                                "quoting_invalid_grant"):
            raise ValueError(f"unknown script item {item!r}")
    if not items:
        raise ValueError("a script needs at least one item")
    return items


class State:
    """The scripts, the issued tokens and the request record; guarded by one lock."""

    def __init__(self, device: list[str], refresh: list[str], interval: int,
                 expires_in: int, token_expires_in: int) -> None:
        self.lock = threading.Lock()
        self.scripts = {"device": device, "refresh": refresh}
        self.interval = interval
        self.expires_in = expires_in
        self.token_expires_in = token_expires_in
        self.issued = 0
        self.devices = 0
        self.access_tokens: set[str] = set()
        self.requests: list[dict] = []

    def next_item(self, script: str) -> str:
        items = self.scripts[script]
        return items.pop(0) if len(items) > 1 else items[0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentgw-token-stub/1"
    disable_nagle_algorithm = True

    server: "StubServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        """No request log."""

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        body = self._body()
        state = self.server.state
        if path in ("/device", "/token") and self.command == "POST":
            form = {k: v[-1] for k, v in
                    urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True).items()}
            with state.lock:
                state.requests.append({"path": path, "grant_type": form.get("grant_type", ""),
                                       "time": time.monotonic(), "form": form})
            if path == "/device":
                self._device()
            else:
                self._token(form.get("grant_type", ""), form)
        elif path == "/__script" and self.command == "POST":
            try:
                doc = json.loads(body)
                with state.lock:
                    for name in ("device", "refresh"):
                        if name in doc:
                            state.scripts[name] = check_items(list(doc[name]))
            except (ValueError, TypeError) as e:
                self._send(400, {"error": str(e)})
                return
            self._send(200, {"ok": True})
        elif path == "/__revoke" and self.command == "POST":
            with state.lock:
                state.access_tokens.clear()
            self._send(200, {"ok": True})
        elif path == "/__requests" and self.command == "GET":
            with state.lock:
                self._send(200, {"requests": list(state.requests)})
        elif path == "/resource" or path.startswith("/resource/"):
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            with state.lock:
                known = token in state.access_tokens
            if known:
                self._send(200, {"ok": True})
            else:
                self._send(401, {"error": "invalid_token"},
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        else:
            self._send(404, {"error": "not_found", "path": path})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def _device(self) -> None:
        state = self.server.state
        with state.lock:
            state.devices += 1
            n = state.devices
            interval, expires_in = state.interval, state.expires_in
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        user_code = f"STUB-{n:04d}"
        answer = {"device_code": f"stub-device-{n}", "user_code": user_code,
                  "verification_uri": f"{base}/verify",
                  "verification_uri_complete": f"{base}/verify?user_code={user_code}",
                  "expires_in": expires_in}
        if interval > 0:
            answer["interval"] = interval
        self._send(200, answer)

    def _token(self, grant_type: str, form: dict[str, str]) -> None:
        state = self.server.state
        script = "device" if grant_type == "urn:ietf:params:oauth:grant-type:device_code" \
            else "refresh"
        with state.lock:
            item = state.next_item(script)
        if item == "slow_pending":
            time.sleep(3)
            item = "pending"
        if item == "slow_tokens":
            time.sleep(2)
            item = "tokens"
        if item == "slow_denied":
            time.sleep(2)
            item = "denied"
        if item == "quoting_invalid_grant":
            # As some servers do ("Invalid refresh token: <token>"); the second copy straddles
            # the 200 bytes of description the daemon keeps.
            secret = form.get("refresh_token") or form.get("device_code") or \
                form.get("client_secret", "")
            head = f"Invalid token: {secret}; "
            text = head + "x" * (194 - len(head)) + " " + secret
            self._send(400, {"error": "invalid_grant", "error_description": text})
            return
        if item in ("tokens", "access_only", "split_tokens"):
            with state.lock:
                state.issued += 1
                n = state.issued
                state.access_tokens.add(f"stub-access-{n}")
                token_expires_in = state.token_expires_in
            answer = {"access_token": f"stub-access-{n}", "token_type": "Bearer",
                      "expires_in": token_expires_in}
            if item == "tokens":
                answer["refresh_token"] = f"stub-refresh-{n}"
            if item == "split_tokens":
                answer["access_token"] += "\r\nX-Injected: 1"
            self._send(200, answer)
        else:
            status, body = ANSWERS[item]
            self._send(status, body)


class StubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, state: State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn); never needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away
        super().handle_error(request, client_address)


class _Stop(Exception):
    pass


def _stop(signum, frame) -> None:
    raise _Stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="scripted OAuth token endpoint (see docstring)")
    parser.add_argument("--device-script", default="pending")
    parser.add_argument("--refresh-script", default="tokens")
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--expires-in", type=int, default=600)
    parser.add_argument("--token-expires-in", type=int, default=3600)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        try:
            state = State(check_items(args.device_script.split(",")),
                          check_items(args.refresh_script.split(",")),
                          args.interval, args.expires_in, args.token_expires_in)
            server = StubServer(state)
        except (OSError, ValueError) as e:
            print(f"token_stub: {e}", file=sys.stderr)
            return 1
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()
    except _Stop:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
