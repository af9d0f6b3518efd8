"""A registry for the update checks: `GET /v2/<ns>/<model>/manifests/<tag>` from the catalog.

The fake's pulls never talk to a registry (the catalog is what can be pulled), but the
supervisor's update check does. This serves, for `127.0.0.1:<port>/<ns>/<model>:<tag>` catalog
entries, the very manifest a pull of that entry writes to the store (so its sha256 is the
digest /api/tags will show), with `Docker-Content-Digest`; 404 for anything else. Change the
catalog (a `revision`, a `size`) and the registry serves the new version at once.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .catalog import Catalog
from .store import MT_MANIFEST, build_manifest


class FakeRegistry:
    """Start with `start()`, stop with `stop()`; `name(model)` is a pullable name on it."""

    def __init__(self, catalog_path: str) -> None:
        self.catalog = Catalog(catalog_path)
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = registry.manifest(self.path)
                if body is None:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {})
                    return
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                self._send(200, body, {"Docker-Content-Digest": digest})

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                self.send_header("Content-Type", MT_MANIFEST)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def name(self, model: str, namespace: str = "library") -> str:
        return f"{self.host}/{namespace}/{model}"

    def manifest(self, path: str) -> bytes | None:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 5 or parts[0] != "v2" or parts[3] != "manifests":
            return None
        _, namespace, model, _, tag = parts
        spec = self.catalog.get(f"{self.host}/{namespace}/{model}:{tag}")
        return None if spec is None else build_manifest(spec)[0]

    def start(self) -> FakeRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
