"""The test harness's ports under pytest-xdist: each worker draws from a block of its own,
below the kernel's ephemeral range, so two workers (or an outgoing connection) never get the
same port between `free_port()` and the server's bind."""

from __future__ import annotations

import socket

import pytest
from fake_ollama import harness
from fake_ollama.harness import PORT_BLOCK, free_port


def block_of(monkeypatch: pytest.MonkeyPatch, worker: str | None) -> range:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    block = harness._worker_block()
    assert block is not None
    return block


def test_workers_get_disjoint_blocks_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks = [block_of(monkeypatch, None)] + [block_of(monkeypatch, f"gw{n}") for n in range(8)]
    seen: set[int] = set()
    for block in blocks:
        assert len(block) == PORT_BLOCK
        assert block[-1] < harness._ephemeral_low()
        assert seen.isdisjoint(block)
        seen.update(block)


def test_ports_come_from_the_block_and_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    block = block_of(monkeypatch, "gw3")
    monkeypatch.setattr(harness, "_port_cursor", {})
    ports = [free_port() for _ in range(20)]
    assert all(port in block for port in ports)
    assert len(set(ports)) == 20


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    block = block_of(monkeypatch, "gw5")
    monkeypatch.setattr(harness, "_port_cursor", {})
    first = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", block[(block.index(first) + 1) % len(block)]))
        taken.listen()
        # Start the walk again just before the taken port: the next free one comes instead.
        monkeypatch.setattr(harness, "_port_cursor", {"127.0.0.1": block.index(first)})
        port = free_port()
        assert port != taken.getsockname()[1]
        assert port in block
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # it really is free
