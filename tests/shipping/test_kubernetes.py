"""deploy/kubernetes validates offline for the Kubernetes versions it targets, and is coherent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from shipping.checkers import REPO, run_tool
from shipping.variables import known_variables

from ollama_preloader.config.models_file import parse_models_file
from ollama_preloader.config.settings import Settings, load_settings

MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest and the newest schema kubernetes-validate ships that we support.
VERSIONS = ["1.30.0", "1.37.0"]
HEALTH_PORT = 11435  # PRELOADER_HEALTH_PORT's default


def documents() -> dict[str, dict[str, Any]]:
    """kind/name -> manifest, for every document of every file."""
    out: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def container() -> dict[str, Any]:
    pod = documents()["StatefulSet/ollama"]["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    main: dict[str, Any] = pod["containers"][0]
    return main


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate(version: str) -> None:
    """kubernetes-validate --strict (its bundled schemas, no cluster, no network) passes."""
    result = run_tool("kubernetes-validate", "--strict", "-k", version, *MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(documents())


def test_validation_can_fail(tmp_path: Path) -> None:
    """A misspelt probe field is rejected, so the check above means something."""
    source = (REPO / "deploy" / "kubernetes" / "statefulset.yaml").read_text()
    bad = tmp_path / "statefulset.yaml"
    bad.write_text(source.replace("periodSeconds: 5", "periodSecond: 5"))
    result = run_tool("kubernetes-validate", "--strict", "-k", VERSIONS[0], bad)
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


def test_the_expected_resources() -> None:
    """A StatefulSet with its PVC template, the Services and the ConfigMap."""
    assert set(documents()) == {
        "ConfigMap/ollama-preloader",
        "ConfigMap/ollama-preloader-models",
        "StatefulSet/ollama",
        "Service/ollama",
        "Service/ollama-headless",
    }
    sts = documents()["StatefulSet/ollama"]["spec"]
    claims = {c["metadata"]["name"]: c for c in sts["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts == {"models": "/root/.ollama", "model-list": "/etc/ollama-preloader"}
    assert "models" in claims
    assert sts["serviceName"] == "ollama-headless"


def test_gpu_request_and_config() -> None:
    """One NVIDIA GPU per pod; the ConfigMap holds only variables the product reads."""
    main = container()
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["envFrom"] == [{"configMapRef": {"name": "ollama-preloader"}}]
    data = documents()["ConfigMap/ollama-preloader"]["data"]
    unknown = set(data) - known_variables()
    assert not unknown, f"the ConfigMap sets {unknown}, which the product would ignore"
    assert data["PRELOADER_MODELS_FILE"]
    assert "OLLAMA_PRELOAD_MODELS" not in data  # both together would be exit 2


def test_the_model_list_is_a_mounted_file_that_follows_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PRELOADER_MODELS_FILE names a key of the models ConfigMap, mounted as a whole directory
    (a subPath mount never sees an edit), read-only; the list in it parses, and with the env
    ConfigMap's variables it makes valid settings."""
    env = documents()["ConfigMap/ollama-preloader"]["data"]
    listing = documents()["ConfigMap/ollama-preloader-models"]["data"]
    pod = documents()["StatefulSet/ollama"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == "model-list"]
    assert volumes["model-list"]["configMap"]["name"] == "ollama-preloader-models"
    assert "subPath" not in mount
    assert "subPathExpr" not in mount
    assert mount["readOnly"] is True
    path = Path(env["PRELOADER_MODELS_FILE"])
    assert path.parent == Path(mount["mountPath"])
    assert path.name in listing
    specs = parse_models_file(listing[path.name].encode(), path).specs
    assert [s.display for s in specs] == ["llama3.2:latest", "nomic-embed-text:latest"]
    for name in list(os.environ):
        if name.startswith(("OLLAMA_", "PRELOADER_")):
            monkeypatch.delenv(name)
    local = tmp_path / path.name
    local.write_text(listing[path.name])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(local))
    assert load_settings(None).models == specs


def test_probes_use_the_supervisors_health() -> None:
    """startup and readiness wait for /readyz (models pinned); liveness is /livez."""
    main = container()
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": 11434, "health": HEALTH_PORT}
    for probe, path in (
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ):
        assert main[probe]["httpGet"] == {"path": path, "port": "health"}, probe
    startup = main["startupProbe"]
    # Pulls and loads of large models: the startup window is at least half an hour.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60


def test_termination_grace_covers_the_supervisors_shutdown() -> None:
    """The kubelet waits longer than PRELOADER_SHUTDOWN_GRACE before it kills the pod."""
    pod = documents()["StatefulSet/ollama"]["spec"]["template"]["spec"]
    default = Settings.model_fields["shutdown_grace"].default
    assert pod["terminationGracePeriodSeconds"] >= default + 5


def test_services_select_the_pods_and_name_real_ports() -> None:
    """Both Services select the pod template's labels and target ports the container has."""
    labels = documents()["StatefulSet/ollama"]["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container()["ports"]}
    for name in ("Service/ollama", "Service/ollama-headless"):
        spec = documents()[name]["spec"]
        assert spec["selector"].items() <= labels.items(), name
        assert {p["targetPort"] for p in spec["ports"]} <= ports, name
    assert documents()["Service/ollama-headless"]["spec"]["clusterIP"] == "None"
