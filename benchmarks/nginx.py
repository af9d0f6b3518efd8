"""Debian's nginx as a plain reverse proxy in front of an Ollama, for benchmarks/guard.py.

The configuration is what an Ollama user writes for nginx: HTTP/1.1 with upstream keep-alive,
no buffering either way (or streams would arrive all at once and uploads be spooled to disk),
no body size limit, a long read timeout. One worker: the guard is one process too.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from preloader_harness import free_port

CONF = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream ollama {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host {upstream};
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


class Nginx:
    """`with Nginx(upstream, root) as proxy:` nginx on `proxy.address`, stopped on exit."""

    def __init__(self, upstream: str, root: Path) -> None:
        self.upstream = upstream
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """The nginx binary, or None (install it: `apt-get install -y nginx`)."""
        return shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )

    def __enter__(self) -> Nginx:
        binary = self.available()
        assert binary is not None, "nginx is not installed (apt-get install -y nginx)"
        self.root.mkdir(parents=True, exist_ok=True)
        port = self.address.rsplit(":", 1)[1]
        conf = self.root / "nginx.conf"
        conf.write_text(CONF.format(root=self.root, upstream=self.upstream, port=port))
        self.proc = subprocess.Popen([binary, "-p", str(self.root), "-c", str(conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.root / 'error.log').read_text()}")
            if (self.root / "nginx.pid").exists():
                time.sleep(0.2)  # the pid file comes just before the socket listens
                return self
            time.sleep(0.05)
        raise RuntimeError("nginx did not start within 10 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the master stops its worker
            self.proc.wait(timeout=10)
