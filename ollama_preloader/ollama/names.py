"""Model-name normalisation and comparison, as Ollama's `types/model/name.go` does it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# Ollama's part rules: first character alphanumeric or `_`, then the part's extra characters.
_MODEL_OR_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,349}$")


class InvalidName(ValueError):
    """The text is not a valid Ollama model name; the message says which part is wrong."""


def _missing(part: str, text: str, fix: str) -> InvalidName:
    return InvalidName(f"the {part} in {text.strip()!r} is empty: {fix}")


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name: host/namespace/model:tag."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse like Ollama's ParseName, filling defaults; raise InvalidName when invalid."""
        s = text.strip()
        if not s:
            raise InvalidName("the name is empty")
        if "@" in s:
            raise InvalidName("digests (@sha256:...) are not accepted in a model name")
        tag = ""
        # `/` cannot appear in a tag, so only a `:` after the last `/` separates the tag.
        if s.rfind(":") > s.rfind("/"):
            s, tag = s.rsplit(":", 1)
            if not tag:
                raise _missing("tag", text, "write a tag after the ':' or remove the ':'")
        parts = s.split("/")
        model = parts[-1]
        namespace = parts[-2] if len(parts) >= 2 else ""
        host = "/".join(parts[:-2]) if len(parts) >= 3 else ""
        # A separator promises the part next to it: Ollama's parser marks an empty one missing
        # (never the default), so `llama3.2:`, `/llama3.2` and `h//m` are invalid names there.
        if not model:
            raise _missing("model", text, "write the model's name")
        if len(parts) >= 2 and not namespace:
            raise _missing("namespace", text, "remove the extra '/' or write the namespace")
        if len(parts) >= 3 and not host:
            raise _missing("host", text, "remove the leading '/' or write the registry's host")
        if "://" in host:
            # `scheme://` with nothing after it is not a promise: Ollama uses the default host.
            host = host.split("://", 1)[1]
        # Ollama strips a `:local` source suffix.
        if tag == "local":
            tag = ""
        name = cls(
            host=host or DEFAULT_HOST,
            namespace=namespace or DEFAULT_NAMESPACE,
            model=model,
            tag=tag or DEFAULT_TAG,
        )
        name._validate(text)
        return name

    def _validate(self, text: str) -> None:
        checks = (
            ("model", self.model, _MODEL_OR_TAG),
            ("tag", self.tag, _MODEL_OR_TAG),
            ("namespace", self.namespace, _NAMESPACE),
            ("host", self.host, _HOST),
        )
        for part, value, pattern in checks:
            if not pattern.match(value):
                raise InvalidName(
                    f"invalid {part} {value!r} in {text.strip()!r}: it must start with a letter, "
                    "digit or underscore and use only letters, digits and -_. "
                    "(80 characters at most)"
                )

    @property
    def is_cloud(self) -> bool:
        """Tags `cloud` and `*-cloud` are proxied to ollama.com and never loaded locally."""
        tag = self.tag.lower()
        return tag == "cloud" or tag.endswith("-cloud")

    def display(self) -> str:
        """Ollama's DisplayShortest: what /api/tags and /api/ps print."""
        if self.host.lower() == DEFAULT_HOST:
            if self.namespace.lower() == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def key(self) -> str:
        """Comparison key: Ollama matches every part case-insensitively."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".casefold()


# Cached: every watch cycle compares each declared model with each runner by key, so an
# uncached parse costs O(models x runners) regex matches per cycle (38 ms at 50 models).
@functools.lru_cache(maxsize=4096)
def name_key(text: str) -> str:
    """Key of a name as the server prints it; a name it cannot parse compares by its text."""
    try:
        return ModelName.parse(text).key()
    except InvalidName:
        return text.strip().casefold()
