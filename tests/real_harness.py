"""The real Ollama kit (../shared/realollama) for the real-server tier: the kit, its registries,
a store of pre-pulled models, and launchers that put the real `ollama` on PATH.

Everything the kit writes goes to directories under the test session's temporary folder: the
kit folder itself is read-only in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_ollama.harness import pid_alive
from preloader_harness import WAIT, Launcher, Run, free_port

__all__ = [
    "MODELS",
    "Kit",
    "RealLauncher",
    "RealServe",
    "Registry",
    "access_count",
    "answers",
    "drop_stream",
    "find_kit",
    "freeze",
    "processes_with_home",
    "ps_rows",
    "wedge_logged",
]

ENV_VAR = "PRELOADER_REAL_OLLAMA"
MODELS = ("tiny-chat", "tiny-chat2", "tiny-embed")


def find_kit() -> tuple[Path | None, str]:
    """The kit's `bin/ollama` named by PRELOADER_REAL_OLLAMA, or None and why not."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None, f"{ENV_VAR} is not set (point it at ../shared/realollama/bin/ollama)"
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, f"{ENV_VAR}={value} is not an executable file"
    return path.resolve(), ""


def _link_stubs(lib: Path) -> list[Path]:
    """Library symlinks that arrived as small text files naming their target."""
    stubs = []
    for entry in lib.iterdir():
        if entry.is_symlink() or not entry.is_file() or entry.stat().st_size > 256:
            continue
        if ".so" not in entry.name:
            continue
        target = entry.read_text(errors="replace").strip()
        if target and "/" not in target and (lib / target).exists():
            stubs.append(entry)
    return stubs


@dataclass
class Kit:
    """A usable copy of the kit: `root/bin/ollama`, `root/lib/ollama`, `root/realollama`."""

    root: Path
    state: Path

    @classmethod
    def prepare(cls, ollama: Path, work: Path) -> Kit:
        """Use the kit in place, or a repaired copy when its library symlinks were flattened.

        A copy of the kit without symlink support turns `libllama.so.0 -> libllama.so.0.1.2`
        into a 17-byte text file, and `llama-server` then fails with `file too short`; the
        copy under `work` gets the links back.
        """
        root = ollama.parent.parent
        state = work / "state"
        state.mkdir(parents=True, exist_ok=True)
        if not _link_stubs(root / "lib" / "ollama"):
            return cls(root, state)
        copy = work / "kit"
        shutil.copytree(root, copy, symlinks=True)
        for path in copy.rglob("*"):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        for stub in _link_stubs(copy / "lib" / "ollama"):
            target = stub.read_text().strip()
            stub.unlink()
            stub.symlink_to(target)
        return cls(copy, state)

    @property
    def ollama(self) -> Path:
        return self.root / "bin" / "ollama"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def llama_server(self) -> Path:
        return self.root / "lib" / "ollama" / "llama-server"

    @property
    def ca(self) -> Path:
        return self.state / "tls" / "ca.pem"

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `realollama --state <state> ARGS` (the kit's own control script)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
        done = subprocess.run(
            ["bash", str(self.root / "realollama"), "--state", str(self.state), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # the first start-registry may apt-get install docker-registry
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"realollama {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done


def free_port_pair() -> int:
    """A port P with P free on 127.0.0.1 and P+1 free on 127.0.0.2 (the blob server)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.2", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a registry")


@dataclass
class Registry:
    """One registry of the kit (distribution + blob server), plain HTTP or TLS."""

    kit: Kit
    port: int
    tls: bool = False
    running: bool = False

    def name(self, model: str) -> str:
        return f"127.0.0.1:{self.port}/library/{model}"

    def start(self) -> Registry:
        args = ["start-registry", "--port", str(self.port)]
        if self.tls:
            args.append("--tls")
        self.kit.script(*args)
        self.running = True
        return self

    def stop(self) -> None:
        self.kit.script("stop-registry", "--port", str(self.port))
        self.running = False

    @property
    def ca(self) -> Path:
        return self.kit.ca


def processes_with_home(home: Path, executable: Path | None = None) -> list[int]:
    """Live processes whose environment has HOME=home (optionally running `executable`).

    Every test gets its own HOME; `ollama serve` and each `llama-server` inherit it, orphans
    included, so this finds what a test started without guessing by name.
    """
    marker = f"HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            exe = Path(os.readlink(f"/proc/{entry}/exe"))
        except OSError:
            continue
        if marker not in environ.split(b"\0"):
            continue
        if executable is not None and exe != executable.resolve():
            continue
        if pid_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "null")


def _post_json(url: str, body: Any, timeout: float = 120.0) -> list[Any]:
    """POST and return every JSON line of the answer (a stream or one object)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class RealServe:
    """A real `ollama serve` this test started itself (for `watch`, and store seeding)."""

    kit: Kit
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    prefix: tuple[str, ...] = ()  # a command that execs `ollama serve` (setpriv: another user)

    @property
    def base_url(self) -> str:
        return "http://" + self.env["OLLAMA_HOST"]

    def start(self) -> RealServe:
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(self.kit.ollama), "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ollama serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                _get_json(self.base_url + "/api/version", timeout=1)
                return self
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError("ollama serve did not answer")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pull(self, name: str, *, insecure: bool = False) -> list[Any]:
        lines = _post_json(
            self.base_url + "/api/pull", {"model": name, "insecure": insecure, "stream": True}
        )
        errors = [line["error"] for line in lines if "error" in line]
        if errors:
            raise AssertionError(f"pull {name}: {errors[-1]}")
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=WAIT)


@dataclass
class RealLauncher(Launcher):
    """The fake tier's Launcher with the real `ollama` (and its runners) instead of the fake."""

    kit: Kit | None = None
    registry: Registry | None = None
    template_store: Path | None = None
    serves: list[RealServe] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def store(self) -> Path:
        return self.tmp / "models"

    def env(self, *, unset: Iterable[str] = (), **overrides: str) -> dict[str, str]:
        assert self.kit is not None
        env = super().env()
        for key in [k for k in env if k.startswith("FAKE_OLLAMA_")]:
            del env[key]
        env["PATH"] = (
            f"{self.kit.bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", "")
        )
        env["OLLAMA_NO_CLOUD"] = "1"  # offline: no ollama.com lookups at start
        # Pulls come from the TLS registry by default; its CA reaches `ollama serve` this way.
        if self.kit.ca.exists():
            env["SSL_CERT_FILE"] = str(self.kit.ca)
        env.update(overrides)
        for key in unset:
            env.pop(key, None)
        self.home.mkdir(exist_ok=True)
        return env

    def start(
        self,
        args: tuple[str, ...] = ("run",),
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        **overrides: str,
    ) -> Run:
        run = super().start(args, env=env, command=command, **overrides)
        assert self.kit is not None
        run.ollama_bin = self.kit.ollama
        return run

    def name(self, model: str) -> str:
        """The registry name of one of the kit's models, as declared and as listed."""
        assert self.registry is not None
        return self.registry.name(model)

    def seed_store(self, *models: str, store: Path | None = None) -> Path:
        """Copy pre-pulled models (short names: tiny-chat, ...) into this test's store."""
        assert self.template_store is not None
        assert self.registry is not None
        dest = store or self.store
        for model in models:
            rel = Path("manifests", f"127.0.0.1:{self.registry.port}", "library", model, "latest")
            manifest = self.template_store / rel
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(manifest, dest / rel)
            doc = json.loads(manifest.read_text())
            digests = [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
            (dest / "blobs").mkdir(parents=True, exist_ok=True)
            for digest in digests:
                blob = "sha256-" + digest.split(":", 1)[1]
                shutil.copy2(self.template_store / "blobs" / blob, dest / "blobs" / blob)
        return dest

    def runners(self) -> list[int]:
        """The `llama-server` processes of this test (children of any of its servers)."""
        assert self.kit is not None
        return processes_with_home(self.home, self.kit.llama_server)

    def servers(self) -> list[int]:
        """The `ollama` processes of this test (`ollama serve`, orphans included)."""
        assert self.kit is not None
        return processes_with_home(self.home, self.kit.ollama)

    def serve(
        self, prefix: tuple[str, ...] = (), unset: Iterable[str] = (), **overrides: str
    ) -> RealServe:
        """Start a real `ollama serve` of our own, for `watch` (the supervisor did not start it);
        `prefix` runs it through another command (setpriv, as another user)."""
        assert self.kit is not None
        env = self.env(unset=unset, **overrides)
        log_path = self.tmp / f"serve-{len(self.serves)}.log"
        server = RealServe(self.kit, env, log_path=log_path, prefix=prefix)
        self.serves.append(server)
        return server.start()

    def cleanup(self) -> None:
        super().cleanup()
        for server in self.serves:
            server.stop()
        # What the test left behind (orphaned runners of a killed server): never by name.
        deadline = time.monotonic() + 10
        while (left := self.servers() + self.runners()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)


def ps_rows(run: Run) -> list[list[str]]:
    """`ollama ps` as the user reads it: one list of cells per model row (exit 0 asserted)."""
    done = run.ollama("ps")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stdout
    assert lines[0].split()[0] == "NAME", done.stdout
    # UNTIL may be several words ("4 minutes from now"): cells are split on runs of spaces.
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


RUNNER_START = "starting llama-server"  # Ollama's log line for each runner it starts


def runner_starts(run: Run) -> int:
    """How many runners Ollama started, by its own relayed log lines."""
    return sum(1 for line in list(run.lines) if RUNNER_START in line)


def access_count(run: Run, method: str, path: str) -> int:
    """Requests Ollama's own access log (relayed by the supervisor) shows for `path`."""
    pattern = re.compile(rf'^\[GIN\] .*\| {method} +"{re.escape(path)}"')
    return sum(1 for line in list(run.lines) if pattern.match(line))


def build_template_store(kit: Kit, registry: Registry, work: Path) -> Path:
    """Pull the kit's three models once per session; tests copy what they need from here."""
    store = work / "template-models"
    home = work / "template-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PRELOADER_"))}
    env.update(
        HOME=str(home),
        OLLAMA_HOST=f"127.0.0.1:{free_port()}",
        OLLAMA_MODELS=str(store),
        OLLAMA_NO_CLOUD="1",
    )
    if registry.tls:
        env["SSL_CERT_FILE"] = str(kit.ca)
    server = RealServe(kit, env, log_path=work / "template-serve.log").start()
    try:
        for model in MODELS:
            server.pull(registry.name(model), insecure=not registry.tls)
    finally:
        server.stop()
    return store


# --- wedging a model by dropped streams (ollama-behaviour.md §9.5a) ---------------------


def _host_port(run: Run) -> tuple[str, int]:
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    return host, int(port)


def freeze(pid: int) -> None:
    """Stop a runner (SIGSTOP) the way a wedged one looks from outside: still listed in
    /api/ps, its port open, answering nothing and using no CPU, until someone kills it.

    Dropped streams wedge a model only sometimes (ollama-behaviour.md §9.5a): the issue saw it
    within 10 to 41 drops, and a CI run saw none in 1000. Tests of a repair wedge it for certain
    this way; tests/real/test_real_probe.py keeps the dropped streams themselves.
    """
    os.kill(pid, signal.SIGSTOP)


def drop_stream(run: Run, model: str, *, drop_if_silent: bool = False) -> None:
    """A streamed generate the client drops after its first chunk (a user pressing stop).
    `drop_if_silent`: a stream that does not start within 5 s (the model wedged) is dropped
    before its first byte instead of raising TimeoutError."""
    host, port = _host_port(run)
    body = json.dumps({"model": model, "prompt": "tell me a story", "keep_alive": -1}).encode()
    head = (
        f"POST /api/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(head + body)
        data = b""
        try:
            while b'"response"' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            if not drop_if_silent:
                raise


def answers(
    run: Run, model: str, timeout: float, prompt: str = "hi", keep_alive: int | None = -1
) -> bool:
    """A client's non-streamed generate: True when it is answered within `timeout`.
    `keep_alive=None` leaves it out, as most clients do."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    body["options"] = {"num_predict": 4}
    req = urllib.request.Request(
        run.base_url + "/api/generate", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            done: dict[str, Any] = json.loads(resp.read())
    except (TimeoutError, urllib.error.URLError, OSError):
        return False
    return bool(done.get("done"))


def wedge_logged(run: Run, listed: str, within: float, more_than: int = 0) -> bool:
    """True when more than `more_than` model.wedged events for `listed` are logged in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if run.count_events("model.wedged", model=listed) > more_than:
            return True
        time.sleep(0.1)
    return False


def wait_http(url: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _get_json(url, timeout=1)
            return
        except (OSError, ValueError, urllib.error.URLError):
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


def kit_catalog(registry: Registry) -> dict[str, dict[str, Any]]:
    """A catalog for the fake that mirrors the kit's three models as the real server reports
    them (the kit's README and /api/tags, /api/ps of v0.33), under this registry's names."""
    base = {"pull_seconds": 0.05, "load_seconds": 0.27}
    models = {
        "tiny-chat": {
            "size": 1867363,
            "vram": 16798186,
            "context_length": 8192,
            "embedding_length": 128,
            "family": "llama",
            "parameter_size": "919K",
            "quantization_level": "F16",
        },
        "tiny-chat2": {
            "size": 4404000,
            "vram": 25836911,
            "context_length": 8192,
            "embedding_length": 256,
            "family": "llama",
            "parameter_size": "4.07M",
            "quantization_level": "Q8_0",
        },
        "tiny-embed": {
            "kind": "embedding",
            "size": 753298,
            "vram": 2715810,
            "context_length": 512,
            "embedding_length": 128,
            "family": "bert",
            "parameter_size": "369K",
            "quantization_level": "F16",
        },
    }
    return {f"{registry.name(m)}:latest": {**base, **entry} for m, entry in models.items()}


@contextlib.contextmanager
def kit_launcher(ollama: Path, work: Path) -> Iterator[RealLauncher]:
    """The benchmarks' set-up: the kit prepared under `work`, its TLS registry, the three
    models pulled once, and a launcher for runs under `work/runs`; all stopped on exit."""
    kit = Kit.prepare(ollama, work / "kit")
    registry = Registry(kit, free_port_pair(), tls=True).start()
    try:
        store = build_template_store(kit, registry, work / "template")
        launcher = RealLauncher(work / "runs", kit=kit, registry=registry, template_store=store)
        launcher.tmp.mkdir()
        try:
            yield launcher
        finally:
            launcher.cleanup()
    finally:
        registry.stop()
