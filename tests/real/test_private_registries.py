"""Private registries on the real Ollama: the kit's plain-HTTP and TLS registries, set up right
and wrong (`?insecure=true`, SSL_CERT_FILE)."""

from __future__ import annotations

import json
import subprocess

from real_harness import RealLauncher, Registry


def pull_requests(lines: list[str]) -> list[str]:
    """Ollama's own access-log lines for /api/pull, as the supervisor relays them."""
    return [line for line in lines if "[GIN]" in line and '"/api/pull"' in line]


def test_insecure_and_ssl_cert_file_pull_from_both_registries(
    real: RealLauncher, registry: Registry
) -> None:
    """Plain HTTP with `?insecure=true`, TLS with the CA in SSL_CERT_FILE: both pulled, pinned."""
    plain, tls = registry.name("tiny-chat"), real.name("tiny-embed")
    env = real.env(OLLAMA_PRELOAD_MODELS=f"{plain}?insecure=true,{tls}")
    assert "SSL_CERT_FILE" in env  # the harness passes the TLS registry's CA
    run = real.start(env=env)
    run.wait_all_pinned()

    pulled = {e["model"] for e in run.events("model.pull.complete")}
    assert pulled == {f"{plain}:latest", f"{tls}:latest"}
    assert run.events("model.failed") == []
    assert run.events("model.pull.retry") == []
    listed = {m["name"]: m["expires_at"] for m in run.ps()}
    assert set(listed) == {f"{plain}:latest", f"{tls}:latest"}
    assert all(expires.startswith("23") for expires in listed.values()), listed
    assert run.stop() == 0


def test_misconfigured_registries_fail_once_each_with_the_fix(
    real: RealLauncher, registry: Registry
) -> None:
    """No insecure for plain HTTP, no CA for TLS, insecure for TLS: one `failed` each naming
    the fix, one pull each, no retries; the model already on disk is pinned all the same."""
    plain = registry.name("tiny-chat")
    tls_no_ca, tls_insecure = real.name("tiny-embed"), real.name("tiny-chat")
    stored = real.name("tiny-chat2")
    real.seed_store("tiny-chat2")
    env = real.env(
        unset=("SSL_CERT_FILE",),
        OLLAMA_PRELOAD_MODELS=f"{plain},{tls_no_ca},{tls_insecure}?insecure=true,{stored}",
    )
    run = real.start(env=env)
    run.wait_event("model.pinned", model=f"{stored}:latest")
    failed = {
        name: run.wait_event("model.failed", model=f"{name}:latest")
        for name in (plain, tls_no_ca, tls_insecure)
    }

    port = registry.port
    assert failed[plain]["msg"].startswith(
        f"{plain}:latest: the registry 127.0.0.1:{port} speaks plain HTTP and Ollama uses HTTPS "
        "unless told otherwise; add ?insecure=true to this entry of OLLAMA_PRELOAD_MODELS "
        f'(Ollama: pull model manifest: Get "https://127.0.0.1:{port}/v2/library/tiny-chat/'
        'manifests/latest": http: server gave HTTP response to HTTPS client)'
    )
    ca_reason = failed[tls_no_ca]["reason"]
    assert "does not trust the CA that signed the certificate of the registry" in ca_reason
    assert "set SSL_CERT_FILE=/path/ca.pem" in ca_reason
    assert "x509: certificate signed by unknown authority" in ca_reason
    https_reason = failed[tls_insecure]["reason"]
    assert "speaks HTTPS but insecure=true makes Ollama use plain HTTP" in https_reason
    assert "Client sent an HTTP request to an HTTPS server." in https_reason
    assert all(e["retry_in"] == 600 for e in failed.values())

    assert run.events("model.pull.retry") == []
    assert run.count_events("model.failed") == 3
    assert len(pull_requests(run.lines)) == 3, "\n".join(pull_requests(run.lines))
    status = json.loads(run.cli("status", "--json").stdout)
    states = {m["name"]: m["state"] for m in status["models"]}
    assert states == {
        f"{plain}:latest": "failed",
        f"{tls_no_ca}:latest": "failed",
        f"{tls_insecure}:latest": "failed",
        f"{stored}:latest": "pinned",
    }
    assert run.stop() == 0


def test_pull_command_names_the_fix_and_bakes_with_it(
    real: RealLauncher, registry: Registry
) -> None:
    """`pull` from the plain registry: exit 4 naming `?insecure=true`; with it, exit 0."""
    plain = registry.name("tiny-chat2")
    refused = real.run_once(("pull",), env=real.env(OLLAMA_PRELOAD_MODELS=plain))
    assert refused.returncode == 4, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"ollama-preloader: error: 1 of 1 models could not be pulled: {plain}:latest (the "
        f"registry 127.0.0.1:{registry.port} speaks plain HTTP"
    )
    assert "add ?insecure=true to this entry of OLLAMA_PRELOAD_MODELS" in last
    assert '"model.pull.retry"' not in refused.stderr

    baked = real.run_once(("pull",), env=real.env(OLLAMA_PRELOAD_MODELS=f"{plain}?insecure=true"))
    assert baked.returncode == 0, baked.stderr
    server = real.serve()
    command = [str(server.kit.ollama), "list"]
    listing = subprocess.run(command, env=server.env, capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == [f"{plain}:latest"]
