"""The exception tree and the exit codes it maps to.

    PreloaderError                 exit 1  (unexpected; a bug or an environment problem)
    ├── ConfigError                exit 2  bad configuration, found before anything starts
    ├── ServerError                exit 3  `ollama serve` could not be started or never became ready
    │   └── ServerExited           exit = the child's own code (policy `exit` after it died)
    └── OllamaAPIError             never exits the supervisor by itself: it becomes a model's
        │                          `failed` reason or a retried attempt
        ├── OllamaUnavailable      connection refused, reset or timed out
        ├── PullStreamError        an `{"error": ...}` line inside a 200 pull stream
        │   └── RegistryTLSError   the registry's HTTP or TLS does not match what Ollama expects
        └── OllamaResponseError    a non-2xx answer, with its status code
            ├── ModelNotFound      404
            ├── NotSupported       400 "... does not support generate" (an embedding model)
            └── ServerBusy         503 queue full

Stopping by signal exits 0 after a clean stop, or 128+N when a second signal N forces it.
`ollama-preloader pull` (build-time baking) exits 4 when a declared model could not be pulled,
and 128+N when signal N interrupted it. Only cli.py turns these into exit codes.
"""

from __future__ import annotations

from enum import StrEnum

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_SERVER = 3
EXIT_PULL_FAILED = 4  # `pull`: at least one declared model is not on disk afterwards


def exit_code_for_signal(signum: int) -> int:
    """Shell convention for a process ended by signal N."""
    return 128 + signum


class PreloaderError(Exception):
    """Base of every error the supervisor raises on purpose."""

    exit_code = EXIT_INTERNAL


class ConfigError(PreloaderError):
    """Bad configuration; the message names the variable and what to do."""

    exit_code = EXIT_CONFIG


class ServerError(PreloaderError):
    """`ollama serve` could not be started, died at startup, or never became ready."""

    exit_code = EXIT_SERVER


class ServerExited(ServerError):
    """`ollama serve` died while running and the policy says the supervisor exits with it."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode
        # A child killed by signal N reports -N; the shell convention is 128+N.
        self.exit_code = returncode if returncode >= 0 else exit_code_for_signal(-returncode)


class OllamaAPIError(PreloaderError):
    """A call to Ollama's API failed; HTTP-library exceptions never escape ollama/api.py."""

    transient = False


class OllamaUnavailable(OllamaAPIError):
    """The server did not answer: connection refused or reset, or a timeout."""

    transient = True


class PullStreamError(OllamaAPIError):
    """The pull stream ended with an error line (the HTTP status was already 200)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # A missing manifest will be missing on the next attempt too.
        self.transient = "file does not exist" not in message


class RegistryProblem(StrEnum):
    """Why Ollama could not talk to a registry, in the terms of the fix."""

    PLAIN_HTTP = "plain_http"  # a plain-HTTP registry pulled without insecure
    UNKNOWN_CA = "unknown_ca"  # a certificate signed by a CA that ollama serve does not trust
    BAD_CERT = "bad_cert"  # any other refused certificate: wrong name, expired, ...
    HTTPS_ONLY = "https_only"  # an HTTPS registry pulled with insecure (Ollama then speaks HTTP)


class RegistryTLSError(PullStreamError):
    """Ollama and the registry disagree on HTTP/HTTPS, or Ollama refused its certificate.

    Only a change of configuration fixes it (`?insecure=true`, SSL_CERT_FILE, the certificate),
    so it is never retried soon.
    """

    def __init__(self, message: str, problem: RegistryProblem) -> None:
        super().__init__(message)
        self.problem = problem
        self.transient = False


class OllamaResponseError(OllamaAPIError):
    """Ollama answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = status >= 500 or status in (408, 429)

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


class ModelNotFound(OllamaResponseError):
    """404: the model is not on disk (or, for a pull, not in the registry)."""


class NotSupported(OllamaResponseError):
    """400 `"M" does not support generate`: an embedding-only model sent to /api/generate."""


class ServerBusy(OllamaResponseError):
    """503: Ollama's request queue is full; try again later."""
