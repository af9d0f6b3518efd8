"""OLLAMA_HOST parsed exactly as Ollama's envconfig.Host does, plus the address to connect to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DEFAULT_PORT = 11434
_SCHEME_PORTS = {"http": 80, "https": 443}


class InvalidHost(ValueError):
    """OLLAMA_HOST names a port Ollama would refuse; the message says which."""


@dataclass(frozen=True)
class OllamaHost:
    """Where `ollama serve` listens (host, port) and the base URL a client should use."""

    scheme: str
    host: str
    port: int
    path: str
    # The value as set (quotes and spaces trimmed): what a message quotes back to the user.
    given: str = field(default="", compare=False)

    @property
    def listen(self) -> str:
        """host:port as Ollama binds it (IPv6 in brackets)."""
        return f"{_bracket(self.host)}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host to connect to: an unspecified bind address means loopback."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{_bracket(self.connect_host)}:{self.port}{self.path}"

    @property
    def is_loopback(self) -> bool:
        host = self.connect_host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_ollama_host(raw: str | None) -> OllamaHost:
    """Parse like envconfig.Host: scheme defaults, path split, `host` with or without port.

    Ollama logs and falls back to the default on a bad port; the supervisor refuses it instead
    (InvalidHost), because a silently different port is the kind of surprise this tool prevents.
    """
    value = (raw or "").strip().strip("\"'").strip()
    if value == "ollama.com":
        return OllamaHost("https", "ollama.com", 443, "", value)
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
        default_port = DEFAULT_PORT
    else:
        default_port = _SCHEME_PORTS.get(scheme, DEFAULT_PORT)
    hostport, slash, path = rest.partition("/")
    path = f"/{path}".rstrip("/") if slash else ""

    host, port_text = _split_host_port(hostport)
    if port_text is None:
        stripped = hostport.strip("[]")
        if ":" in stripped and not _is_ipv6(stripped):
            # '127.0.0.1:11434:' and the like: Ollama fails to look the whole string up as a name.
            raise InvalidHost("not a host:port (remove the stray colon)")
        host = stripped if stripped else "127.0.0.1"
        return OllamaHost(scheme, host, default_port, path, value)
    # Port 0 makes Ollama listen on a random port nobody can find, so it is refused too.
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidHost(f"invalid port {port_text!r} (use a number from 1 to 65535)")
    return OllamaHost(scheme, host, int(port_text), path, value)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """Go's net.SplitHostPort, returning (hostport, None) where Go would fail."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            return hostport, None
        host, after = hostport[1:end], hostport[end + 1 :]
        if after.startswith(":"):
            return host, after[1:]
        return hostport, None
    if hostport.count(":") != 1:
        # No colon: no port. More than one: a bare IPv6 address, which Go also refuses to split.
        return hostport, None
    host, port = hostport.split(":")
    return host, port
