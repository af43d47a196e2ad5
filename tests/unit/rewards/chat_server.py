"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests (http.server in a thread).

``ChatServer(respond)`` serves ``GET /v1/models`` and ``POST /v1/chat/completions``; ``respond(messages)``
(a scripted function, or ``ChatBackend.complete`` of a tiny model) writes the reply. ``plan`` is a queue of
behaviours for the next requests: ``"ok"``, ``"slow"`` (sleep ``slow_s`` before answering), ``"bad_json"``
(a body that is not JSON), ``"no_choices"`` (JSON without ``choices``), ``"500"``, ``"400"``, and replies
that are not HTTP: ``"bad_status"`` (a garbage status line: ``BadStatusLine``), ``"incomplete"`` (a body shorter
than its Content-Length: ``IncompleteRead``), ``"long_line"`` (a 70 kB header line: ``LineTooLong``),
``"reset"`` (the connection reset without a reply), ``"trickle"`` (a valid reply sent one byte every
``trickle_s`` seconds, for at most ``trickle_total_s``: every socket read gets a byte in time, the whole reply
takes minutes).
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, respond, model: str = "judge", slow_s: float = 1.0, models_route: bool = True,
                 trickle_s: float = 0.3, trickle_total_s: float = 8.0):
        self.respond, self.model, self.slow_s, self.models_route = respond, model, slow_s, models_route
        self.trickle_s, self.trickle_total_s = trickle_s, trickle_total_s
        self.plan: deque[str] = deque()
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _raw(self, action: str):
                """Replies that are not (complete) HTTP, written straight to the socket."""
                ok = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Step 1: correct"}}]})
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(ok)}\r\n"
                self.close_connection = True
                try:
                    if action == "reset":  # SO_LINGER 0: close() sends RST
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                    elif action == "bad_status":
                        self.wfile.write(b"this is not http\r\n\r\n")
                    elif action == "incomplete":
                        self.wfile.write((head + "\r\n" + ok[:10]).encode())
                    elif action == "long_line":
                        self.wfile.write((head + "X-Junk: " + "a" * 70000 + "\r\n\r\n" + ok).encode())
                    elif action == "trickle":
                        t0 = time.monotonic()
                        for byte in (head + "\r\n" + ok).encode():
                            if time.monotonic() - t0 > server.trickle_total_s:
                                break
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(server.trickle_s)
                    self.wfile.flush()
                except OSError:  # the client gave up
                    pass

            def do_GET(self):
                if self.path == "/v1/models" and server.models_route:
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.model}]}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    action = server.plan.popleft() if server.plan else "ok"
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if action in ("bad_status", "incomplete", "long_line", "reset", "trickle"):
                        return self._raw(action)
                    if action == "slow":
                        time.sleep(server.slow_s)
                    if action in ("500", "400"):
                        return self._send(int(action), b'{"error": "scripted failure"}')
                    if action == "bad_json":
                        return self._send(200, b"<html>this is not json")
                    if action == "no_choices":
                        return self._send(200, b'{"id": "x", "object": "chat.completion"}')
                    if body.get("model") != server.model:
                        return self._send(404, json.dumps({"error": f"model {body.get('model')} not found"}).encode())
                    text = server.respond(body["messages"])
                    reply = {"id": "chatcmpl-1", "object": "chat.completion", "model": server.model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}]}
                    self._send(200, json.dumps(reply).encode())
                finally:
                    with server._lock:
                        server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            # socketserver's listen backlog of 5 overflows when a judge opens 16-32 connections at once: the kernel
            # drops SYNs (a 1 s retransmit per batch) and now and then resets a connection, which the client counts
            # as one failed call the server never saw (a flaky exact count of requests). A real server's is larger.
            request_queue_size = 128

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
