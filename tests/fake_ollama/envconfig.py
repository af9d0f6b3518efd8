"""Environment parsing as Ollama's envconfig (§1.3, §1.4) plus the FAKE_OLLAMA_* knobs."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import gotime

GIB = 1024**3


def var(key: str, env: Mapping[str, str] | None = None) -> str:
    """envconfig.Var: trim whitespace, then surrounding quotes."""
    e = os.environ if env is None else env
    return e.get(key, "").strip().strip("\"'")


def go_parse_bool(s: str) -> bool | None:
    """strconv.ParseBool; None when it does not parse."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def env_bool(key: str, env: Mapping[str, str] | None = None) -> bool:
    """envconfig.Bool: unset -> false; a value that does not parse counts as true."""
    s = var(key, env)
    if s == "":
        return False
    b = go_parse_bool(s)
    return True if b is None else b


def env_uint(key: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """envconfig.Uint: invalid -> default."""
    s = var(key, env)
    if s == "":
        return default
    if s.isdigit() and s.isascii():
        return int(s)
    return default


@dataclass(frozen=True)
class HostURL:
    """Result of envconfig.Host()."""

    scheme: str
    host: str  # may be "" (all interfaces)
    port: int
    path: str
    port_warning: str | None = None

    @property
    def hostport(self) -> str:
        """net.JoinHostPort(host, port)."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def base_url(self) -> str:
        """URL a client would use (empty host -> loopback)."""
        host = self.host or "127.0.0.1"
        h = f"[{host}]" if ":" in host else host
        scheme = self.scheme if self.scheme in ("http", "https") else "http"
        return f"{scheme}://{h}:{self.port}"


def _split_host_port(hp: str) -> tuple[str, str] | None:
    """net.SplitHostPort; None on error."""
    if hp.startswith("["):
        end = hp.find("]")
        if end < 0:
            return None
        host = hp[1:end]
        rest = hp[end + 1 :]
        if not rest.startswith(":"):
            return None
        port = rest[1:]
        if "[" in port or "]" in port:
            return None
        return host, port
    i = hp.rfind(":")
    if i < 0:
        return None
    host, port = hp[:i], hp[i + 1 :]
    if ":" in host or "[" in host or "]" in host:
        return None
    return host, port


def parse_host(raw: str) -> HostURL:
    """envconfig.Host() (§1.4)."""
    default_port = "11434"
    s = raw.strip().strip("\"'").strip()
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
        if s == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port = "127.0.0.1", default_port
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if hostport != "":
                host = hostport
    else:
        host, port = split
    warning = None
    try:
        n = int(port, 10)
        ok = 0 <= n <= 65535 and port.lstrip("+-").isdigit()
    except ValueError:
        ok = False
    if not ok:
        warning = port
        port = default_port
    return HostURL(scheme, host, int(port), path, warning)


def host_from_env(env: Mapping[str, str] | None = None) -> HostURL:
    """Host() using OLLAMA_HOST from the environment."""
    return parse_host(var("OLLAMA_HOST", env))


def default_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """OLLAMA_MODELS or $HOME/.ollama/models."""
    s = var("OLLAMA_MODELS", env)
    if s:
        return Path(s)
    e = os.environ if env is None else env
    home = e.get("HOME") or str(Path.home())
    return Path(home) / ".ollama" / "models"


def _float_env(key: str, default: float, env: Mapping[str, str]) -> float:
    s = var(key, env)
    if not s:
        return default
    try:
        return float(s)
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    """Everything the fake server reads from its environment at start."""

    host: HostURL
    models_dir: Path
    keep_alive_raw: str
    max_loaded_models: int
    max_queue: int
    context_length: int
    num_parallel: int
    load_timeout_raw: str
    noprune: bool
    debug: bool
    no_cloud: bool
    # fake knobs
    catalog_path: str
    speed: float
    startup_delay: float
    vram: int
    log_path: str
    faults_path: str
    present: tuple[str, ...]

    @property
    def gpu(self) -> bool:
        """True when FAKE_OLLAMA_VRAM describes a GPU."""
        return self.vram > 0

    @property
    def default_num_ctx(self) -> int:
        """OLLAMA_CONTEXT_LENGTH or the VRAM-based default (§1.3)."""
        if self.context_length > 0:
            return self.context_length
        if self.vram >= 47 * GIB:
            return 262144
        if self.vram >= 23 * GIB:
            return 32768
        return 4096

    def keep_alive(self) -> int:
        """envconfig.KeepAlive() in nanoseconds."""
        return gotime.env_keep_alive(self.keep_alive_raw)

    def load_timeout(self) -> int | None:
        """envconfig.LoadTimeout() in ns, None = infinite."""
        return gotime.env_load_timeout(self.load_timeout_raw)

    def scaled(self, seconds: float) -> float:
        """A model delay divided by FAKE_OLLAMA_SPEED."""
        return seconds / self.speed if self.speed > 0 else seconds


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read all settings from env (default os.environ)."""
    e: Mapping[str, str] = os.environ if env is None else env
    present = tuple(p.strip() for p in var("FAKE_OLLAMA_PRESENT", e).split(",") if p.strip())
    speed = _float_env("FAKE_OLLAMA_SPEED", 1.0, e)
    try:
        vram = int(float(var("FAKE_OLLAMA_VRAM", e) or "0"))
    except ValueError:
        vram = 0
    return Settings(
        host=host_from_env(e),
        models_dir=default_models_dir(e),
        keep_alive_raw=var("OLLAMA_KEEP_ALIVE", e),
        max_loaded_models=env_uint("OLLAMA_MAX_LOADED_MODELS", 0, e),
        max_queue=env_uint("OLLAMA_MAX_QUEUE", 512, e),
        context_length=env_uint("OLLAMA_CONTEXT_LENGTH", 0, e),
        num_parallel=env_uint("OLLAMA_NUM_PARALLEL", 1, e) or 1,
        load_timeout_raw=var("OLLAMA_LOAD_TIMEOUT", e),
        noprune=env_bool("OLLAMA_NOPRUNE", e),
        debug=var("OLLAMA_DEBUG", e) not in ("", "0", "false", "False", "FALSE", "f", "F"),
        no_cloud=env_bool("OLLAMA_NO_CLOUD", e),
        catalog_path=var("FAKE_OLLAMA_CATALOG", e),
        speed=speed if speed > 0 else 1.0,
        startup_delay=max(0.0, _float_env("FAKE_OLLAMA_STARTUP_DELAY", 0.0, e)),
        vram=max(0, vram),
        log_path=var("FAKE_OLLAMA_LOG", e),
        faults_path=var("FAKE_OLLAMA_FAULTS", e),
        present=present,
    )
