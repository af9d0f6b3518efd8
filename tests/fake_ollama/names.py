"""Model name parsing, validation and display, as Ollama's types/model/name.go (§5.3)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_KIND_HOST = "host"
_KIND_NAMESPACE = "namespace"
_KIND_MODEL = "model"
_KIND_TAG = "tag"


def _alnum_or_underscore(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _valid_part(kind: str, s: str) -> bool:
    maxlen = 350 if kind == _KIND_HOST else 80
    if not 1 <= len(s) <= maxlen:
        return False
    for i, c in enumerate(s):
        if i == 0:
            if not _alnum_or_underscore(c):
                return False
            continue
        if c in "_-":
            continue
        if c == ".":
            if kind == _KIND_NAMESPACE:
                return False
            continue
        if c == ":":
            if kind != _KIND_HOST:
                return False
            continue
        if not _alnum_or_underscore(c):
            return False
    return True


@dataclass(frozen=True)
class Name:
    """A fully merged model name (host/namespace/model:tag)."""

    host: str
    namespace: str
    model: str
    tag: str

    def is_valid(self) -> bool:
        """Every part present and made of allowed characters."""
        return (
            _valid_part(_KIND_HOST, self.host)
            and _valid_part(_KIND_NAMESPACE, self.namespace)
            and _valid_part(_KIND_MODEL, self.model)
            and _valid_part(_KIND_TAG, self.tag)
        )

    def display_shortest(self) -> str:
        """DisplayShortest(): what the API returns as `name`/`model`."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def fold(self) -> tuple[str, str, str, str]:
        """Case-folded key for case-insensitive comparison."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def parts(self) -> tuple[str, str, str, str]:
        """The four path components of the manifest."""
        return (self.host, self.namespace, self.model, self.tag)


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    after = s[i + len(sep) :]
    return s[:i], after or "!", True


def parse_name_bare(s: str) -> Name:
    """ParseNameBare: no defaults filled in."""
    tag = ""
    if s.rfind(":") > s.rfind("/"):
        s, tag, _ = _cut_promised(s, ":")
    s, model, promised = _cut_promised(s, "/")
    if not promised:
        return Name("", "", s, tag)
    s, namespace, promised = _cut_promised(s, "/")
    if not promised:
        return Name("", s, model, tag)
    scheme, sep, rest = s.partition("://")
    host = rest if sep else scheme
    return Name(host, namespace, model, tag)


def parse_name(s: str) -> Name:
    """ParseName: bare parse merged with the defaults (a `:local` suffix is stripped)."""
    if s.endswith(":local"):
        s = s[: -len(":local")]
    n = parse_name_bare(s)
    return Name(
        n.host or DEFAULT_HOST,
        n.namespace or DEFAULT_NAMESPACE,
        n.model,
        n.tag or DEFAULT_TAG,
    )


def normalize(s: str) -> str:
    """Lower-cased DisplayShortest of a name, for matching catalog/fault keys."""
    return parse_name(s).display_shortest().lower()
