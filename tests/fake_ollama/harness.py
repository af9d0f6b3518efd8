"""Start and stop a fake `ollama serve` subprocess for tests, and read what it saw.

Stdlib only. With `tests/` on sys.path::

    from fake_ollama.harness import FakeOllama, start_fake

    def test_something(tmp_path):
        catalog = {"llama3.2": {"size": 10**9}}
        with start_fake(tmp_path, present=["llama3.2"], catalog=catalog) as fake:
            status, body = fake.request("POST", "/api/generate", {"model": "llama3.2"})
            assert fake.events("load")[0]["model"] == "llama3.2:latest"

API
---
free_port(host="127.0.0.1") -> int
    A TCP port that was free a moment ago.
fake_env(workdir, *, port=None, models_dir=None, catalog=None, faults=None, present=(),
         speed=None, extra=None) -> dict[str, str]
    The environment for `ollama serve`: the caller's environment without any OLLAMA_* or
    FAKE_OLLAMA_* variable, PATH with tests/fake_bin first, OLLAMA_HOST=127.0.0.1:<port>,
    OLLAMA_MODELS (default workdir/models), FAKE_OLLAMA_LOG=workdir/fake-log.jsonl,
    FAKE_OLLAMA_FAULTS=workdir/faults.json (written from `faults`), FAKE_OLLAMA_CATALOG
    (written to workdir/catalog.json when `catalog` is a dict; a str is used as a path),
    FAKE_OLLAMA_PRESENT, FAKE_OLLAMA_SPEED; `extra` is applied last (a value of None removes).
start_fake(workdir, *, wait=True, timeout=30, **fake_env_kwargs) -> FakeOllama
    fake_env(...) then FakeOllama(env, workdir).start(wait, timeout).
FakeOllama(env, workdir)
    .start(wait=True, timeout=30)     spawn `tests/fake_bin/ollama serve` in its own session
                                      (so its runners share the serve pid as process group);
                                      stdout/stderr go to workdir/serve-N.out / .err
    .wait_ready(timeout=30)           poll GET / (2 s per attempt) until 200
    .stop(sig=SIGTERM, timeout=15)    signal the serve process, wait, return its exit code
    .kill()                           SIGKILL the serve process only (runners survive, §7.5)
    .cleanup()                        stop if running, then SIGKILL whatever is left in its
                                      process group (stray runners); safe to call twice
    .restart(wait=True)               stop (SIGTERM) and start again with the same env
    .host / .port / .base_url / .url(path) / .pid / .pgid / .models_dir / .log_path / .faults_path
    .request(method, path, body=None, timeout=30) -> (status, parsed JSON | text | None)
    .stream(path, body, timeout=30) -> (status, [parsed lines])   for NDJSON answers
    .ps() / .tags() / .state()        /api/ps models, /api/tags models, /_fake/state
    .evict(model) / .crash_runner(model)   the /_fake/ control endpoints
    .runner_pids() -> list[int]       pids of loaded runners (from /_fake/state)
    .set_faults(dict) / .faults()     write (atomically) / read the faults file
    .set_catalog(dict)                rewrite the catalog file (re-read by the server)
    .records() -> list[dict]          every line of FAKE_OLLAMA_LOG
    .requests(path=None, method=None) request records {"t","method","path","body","status"}
    .events(name=None, model=None)    event records {"t","event","model",...}
    .wait_for(predicate, timeout=30, what="")   poll until truthy, return the value
    .stdout_text() / .stderr_text()   what `ollama serve` printed so far
    .cli(*args, timeout=30) -> CompletedProcess[str]   run tests/fake_bin/ollama with .env
    context manager: __exit__ calls cleanup()
pid_alive(pid) -> bool, processes_in_group(pgid) -> list[int], read_jsonl(path) -> list[dict],
wait_until(predicate, timeout=30, interval=0.02, what="") -> value
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parents[1]
FAKE_BIN = TESTS_DIR / "fake_bin"
OLLAMA_EXE = FAKE_BIN / "ollama"


# Ports come from a block of this pytest-xdist worker's own (PYTEST_XDIST_WORKER=gwN; none
# without xdist), below the kernel's ephemeral range. A port the kernel picks (bind to 0) can be
# picked again by another worker, or taken by any outgoing connection, between the moment we
# close it and the moment the server binds it; a block of our own below that range cannot.
PORT_FLOOR = 10000
PORT_BLOCK = 1000
_port_cursor: dict[str, int] = {}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_block() -> range | None:
    """This worker's ports, or None when the ephemeral range leaves no room below it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker[:2] == "gw" and worker[2:].isdigit() else 0
    blocks = (_ephemeral_low() - PORT_FLOOR) // PORT_BLOCK
    if blocks < 1:
        return None
    start = PORT_FLOOR + (index % blocks) * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, from this worker's block (see PORT_BLOCK).

    The block is walked from a random place (other test runs may share the machine) and never
    hands out the same port twice in a row; a port in use is skipped."""
    block = _worker_block()
    if block is not None:
        offset = _port_cursor.get(host)
        if offset is None:
            offset = random.randrange(len(block))
        for step in range(1, len(block) + 1):
            port = block[(offset + step) % len(block)]
            if _bindable(host, port):
                _port_cursor[host] = (offset + step) % len(block)
                return port
    with socket.socket() as s:  # the whole block is busy: any port the kernel gives
        s.bind((host, 0))
        return int(s.getsockname()[1])


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Parse a JSON-lines file; missing file or broken lines are skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll predicate until it returns something truthy; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what or predicate!r}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Each process /proc lists now: its pid and the stat fields after its name (state, ppid,
    pgrp, ...); one that exits while being read is skipped."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield int(entry), stat.rsplit(")", 1)[1].split()


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    return [pid for pid, fields in proc_stats() if fields[0] != "Z" and int(fields[2]) == pgid]


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def fake_env(
    workdir: Path,
    *,
    port: int | None = None,
    models_dir: Path | None = None,
    catalog: Mapping[str, Any] | str | None = None,
    faults: Mapping[str, Any] | None = None,
    present: Iterable[str] = (),
    speed: float | None = None,
    extra: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """Environment for a fake `ollama serve` rooted in workdir (see module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "FAKE_OLLAMA_"))}
    env["PATH"] = f"{FAKE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["OLLAMA_HOST"] = f"127.0.0.1:{port or free_port()}"
    env["OLLAMA_MODELS"] = str(models_dir or workdir / "models")
    env["FAKE_OLLAMA_LOG"] = str(workdir / "fake-log.jsonl")
    faults_path = workdir / "faults.json"
    _write_json_atomic(faults_path, dict(faults or {}))
    env["FAKE_OLLAMA_FAULTS"] = str(faults_path)
    if isinstance(catalog, str):
        env["FAKE_OLLAMA_CATALOG"] = catalog
    elif catalog is not None:
        cat_path = workdir / "catalog.json"
        data = dict(catalog)
        _write_json_atomic(cat_path, data if "models" in data else {"models": data})
        env["FAKE_OLLAMA_CATALOG"] = str(cat_path)
    names = list(present)
    if names:
        env["FAKE_OLLAMA_PRESENT"] = ",".join(names)
    if speed is not None:
        env["FAKE_OLLAMA_SPEED"] = str(speed)
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class FakeOllama:
    """One fake `ollama serve` subprocess (see the module docstring for the API)."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.env: dict[str, str] = dict(env)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self._starts = 0
        self.stdout_path = workdir / "serve-0.out"
        self.stderr_path = workdir / "serve-0.err"

    # ------------------------------------------------------------ addresses
    @property
    def host(self) -> str:
        """OLLAMA_HOST as given (host:port)."""
        return self.env["OLLAMA_HOST"]

    @property
    def port(self) -> int:
        """The port from OLLAMA_HOST."""
        return int(self.host.rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        """http://host:port."""
        h = self.host
        return h if "://" in h else "http://" + h

    def url(self, path: str) -> str:
        """Absolute URL for an API path."""
        return self.base_url + path

    @property
    def pid(self) -> int:
        """pid of the serve process."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def models_dir(self) -> Path:
        """OLLAMA_MODELS."""
        return Path(self.env["OLLAMA_MODELS"])

    @property
    def log_path(self) -> Path:
        """FAKE_OLLAMA_LOG."""
        return Path(self.env["FAKE_OLLAMA_LOG"])

    @property
    def faults_path(self) -> Path:
        """FAKE_OLLAMA_FAULTS."""
        return Path(self.env["FAKE_OLLAMA_FAULTS"])

    # ------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True, timeout: float = 30.0) -> FakeOllama:
        """Spawn `ollama serve` in a new session; optionally wait until it answers."""
        n = self._starts
        self._starts += 1
        self.stdout_path = self.workdir / f"serve-{n}.out"
        self.stderr_path = self.workdir / f"serve-{n}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(OLLAMA_EXE), "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pgid = self.proc.pid
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll GET / until 200 (fails early if the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"fake ollama exited with {self.proc.returncode}:\n{self.stderr_text()}"
                )
            try:
                with urllib.request.urlopen(self.url("/"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.02)
        raise AssertionError(f"fake ollama not ready after {timeout}s:\n{self.stderr_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send sig to the serve process and return its exit code."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> int:
        """SIGKILL only the serve process; its runners survive like the real server's."""
        return self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the server if running, then SIGKILL anything left in its process group."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(signal.SIGTERM, timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)

    def restart(self, wait: bool = True, timeout: float = 30.0) -> FakeOllama:
        """SIGTERM, then start again with the same environment."""
        self.cleanup()
        return self.start(wait=wait, timeout=timeout)

    def __enter__(self) -> FakeOllama:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ HTTP
    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """One request; returns (status, JSON-decoded body, or text, or None if empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", "replace")
        if not text.strip():
            return status, None
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stream(self, path: str, body: Any, timeout: float = 30.0) -> tuple[int, list[Any]]:
        """POST and collect every NDJSON line."""
        status, raw = self._raw("POST", path, body, timeout)
        lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
        return status, lines

    def _raw(self, method: str, path: str, body: Any, timeout: float) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, obj = self.request(method, path, body)
        if status != 200:
            raise AssertionError(f"{method} {path} -> {status}: {obj!r}")
        return obj

    def ps(self) -> list[dict[str, Any]]:
        """/api/ps models."""
        models: list[dict[str, Any]] = self._ok("GET", "/api/ps")["models"]
        return models

    def tags(self) -> list[dict[str, Any]]:
        """/api/tags models."""
        models: list[dict[str, Any]] = self._ok("GET", "/api/tags")["models"]
        return models

    def state(self) -> dict[str, Any]:
        """/_fake/state."""
        st: dict[str, Any] = self._ok("GET", "/_fake/state")
        return st

    def evict(self, model: str) -> None:
        """Scheduler-style eviction of a loaded model."""
        self._ok("POST", "/_fake/evict", {"model": model})

    def crash_runner(self, model: str) -> int:
        """Kill a runner process (it stays listed); returns its pid."""
        pid: int = self._ok("POST", "/_fake/crash_runner", {"model": model})["killed_pid"]
        return pid

    def runner_pids(self) -> list[int]:
        """pids of the loaded runners."""
        return [int(r["pid"]) for r in self.state()["runners"]]

    # ------------------------------------------------------------ files
    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Replace the faults file atomically (the server re-reads it per request)."""
        _write_json_atomic(self.faults_path, dict(faults))

    def faults(self) -> dict[str, Any]:
        """Current faults file (with consumed counts)."""
        try:
            data: dict[str, Any] = json.loads(self.faults_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data

    def set_catalog(self, catalog: Mapping[str, Any]) -> None:
        """Rewrite the catalog file (the server re-reads it when it changes)."""
        path = self.env.get("FAKE_OLLAMA_CATALOG")
        if not path:
            raise AssertionError("started without a catalog file")
        data = dict(catalog)
        _write_json_atomic(Path(path), data if "models" in data else {"models": data})

    def records(self) -> list[dict[str, Any]]:
        """Every record of FAKE_OLLAMA_LOG."""
        return read_jsonl(self.log_path)

    def requests(self, path: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """Request records, optionally filtered."""
        return [
            r
            for r in self.records()
            if "path" in r
            and (path is None or r["path"] == path)
            and (method is None or r["method"] == method)
        ]

    def events(self, name: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Event records, optionally filtered by event name and model display name."""
        return [
            r
            for r in self.records()
            if "event" in r
            and (name is None or r["event"] == name)
            and (model is None or r.get("model") == model)
        ]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
        """Poll until predicate() is truthy (AssertionError with server stderr on timeout)."""
        try:
            return wait_until(predicate, timeout=timeout, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- fake stderr ---\n{self.stderr_text()}") from None

    def stdout_text(self) -> str:
        """What serve printed on stdout (gin lines)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        """What serve printed on stderr (slog lines, errors)."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run the fake `ollama` CLI with this server's environment."""
        return subprocess.run(
            [str(OLLAMA_EXE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def start_fake(
    workdir: Path, *, wait: bool = True, timeout: float = 30.0, **kwargs: Any
) -> FakeOllama:
    """fake_env(workdir, **kwargs), then start a FakeOllama (see module docstring)."""
    fake = FakeOllama(fake_env(workdir, **kwargs), workdir)
    try:
        return fake.start(wait=wait, timeout=timeout)
    except BaseException:
        fake.cleanup()
        raise


__all__ = [
    "FAKE_BIN",
    "OLLAMA_EXE",
    "FakeOllama",
    "fake_env",
    "free_port",
    "pid_alive",
    "processes_in_group",
    "read_jsonl",
    "start_fake",
    "wait_until",
]
