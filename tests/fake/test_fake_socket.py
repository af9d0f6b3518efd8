"""The fake's connections behave like Go's at the TCP level: no Nagle delay on answers."""

from __future__ import annotations

import socket

from fake_ollama.httpd import Handler


def test_accepted_connections_disable_nagle() -> None:
    """Each connection gets TCP_NODELAY in the handler's setup, as Go's net package sets it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        with client, conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            handler = Handler.__new__(Handler)  # setup() only: no request is handled
            handler.request = conn
            handler.setup()
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            handler.wfile.close()
            handler.rfile.close()
