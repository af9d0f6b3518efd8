"""The inference_fail fault: a failed completion leaves the runner loaded and pinned."""

from __future__ import annotations

import httpx

from .conftest import MakeFake


def test_inference_fail_keeps_the_runner(make_fake: MakeFake) -> None:
    """A prompt fails with 500 and the message; loads are untouched and the pin stays."""
    fake = make_fake(
        present=["llama3.2"],
        faults={"inference_fail": {"llama3.2": {"times": 1, "message": "decode failed"}}},
    )
    load = httpx.post(fake.url("/api/generate"), json={"model": "llama3.2", "keep_alive": -1})
    assert load.status_code == 200
    body = {"model": "llama3.2", "prompt": "Hello", "stream": False, "keep_alive": -1}
    failed = httpx.post(fake.url("/api/generate"), json=body)
    assert failed.status_code == 500
    assert failed.json() == {"error": "decode failed"}
    [runner] = fake.ps()
    assert runner["expires_at"].startswith("2")
    assert int(runner["expires_at"][:4]) > 2200
    assert fake.faults()["inference_fail"]["llama3.2"]["times"] == 0
    # Spent: the next prompt is answered.
    assert httpx.post(fake.url("/api/generate"), json=body).status_code == 200
    assert fake.events("reload") == []
