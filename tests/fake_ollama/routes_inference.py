"""Inference endpoints: generate, chat, embed, embeddings and their canned answers (§2.5, §3)."""

from __future__ import annotations

import hashlib
import math
import os
import time
from typing import TYPE_CHECKING, Any

from .binding import HTTPError
from .gotime import go_q, rfc3339nano
from .names import parse_name
from .pull import ClientGone
from .runners import LoadRequest, Runner
from .store import LocalModel

if TYPE_CHECKING:
    from .httpd import Handler

NO_EMBEDDINGS = "This server does not support embeddings. Start it with `--embeddings`"
CANNED = "The quick brown fox jumps over the lazy dog while the fake model answers your prompt."


def now_utc() -> str:
    """created_at: UTC RFC3339Nano."""
    return rfc3339nano(time.time_ns(), utc=True)


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for text."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(dims * 2)
    vals = [
        (int.from_bytes(raw[i : i + 2], "little") / 32767.5) - 1.0 for i in range(0, dims * 2, 2)
    ]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [round(v / norm, 7) for v in vals]


def _resolve_for_inference(h: Handler, model_s: str, *, empty_status: int) -> LocalModel:
    name = parse_name(model_s)
    if not model_s:
        if empty_status == 404:
            raise HTTPError(404, "model '' not found")
        raise HTTPError(400, "model is required")
    if not name.is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model '{model_s}' not found")
    return lm


def _hang_if_wedged(h: Handler, lm: LocalModel, runner: Runner) -> None:
    """Fault `wedge`: a request with a prompt or input waits for the model's slot for ever,
    as behind a slot held by a dropped stream on the real server (§9.5a); only its own client
    giving up ends it. The runner process stays idle, and load-only requests still answer."""
    if not h.app.faults.wedged(lm.display, runner.pid, os.getpid()):
        return
    while not h.client_gone():
        time.sleep(0.05)
    raise ClientGone()


def _metrics(req: LoadRequest, t0: int, prompt: str, n_tokens: int, eval_ns: int) -> dict[str, Any]:
    total = time.monotonic_ns() - t0
    return {
        "total_duration": total,
        "load_duration": req.loaded_ns or 120_000,
        "prompt_eval_count": max(1, len(prompt) // 4),
        "prompt_eval_duration": 1_000_000,
        "eval_count": n_tokens,
        "eval_duration": max(eval_ns, 1),
    }


def _tokens(options: dict[str, Any]) -> tuple[list[str], str]:
    words = CANNED.split(" ")
    toks = [w if i == 0 else " " + w for i, w in enumerate(words)]
    n = options.get("num_predict")
    if isinstance(n, int) and 0 <= n < len(toks):
        return toks[:n], "length"
    return toks, "stop"


def _generate_or_chat(h: Handler, chat: bool) -> None:
    req = h.bind("ChatRequest" if chat else "GenerateRequest")
    model_s = req.get("model") or ""
    lm = _resolve_for_inference(h, model_s, empty_status=400 if chat else 404)
    ka = req.get("keep_alive")
    if chat:
        messages = req.get("messages") or []
        empty = len(messages) == 0
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    else:
        prompt = req.get("prompt") or ""
        empty = prompt == "" and not req.get("images")
    base: dict[str, Any] = {"model": model_s}

    def reply(done_reason: str) -> dict[str, Any]:
        r = dict(base)
        r["created_at"] = now_utc()
        if chat:
            r["message"] = {"role": "assistant", "content": ""}
        else:
            r["response"] = ""
        r["done"] = True
        r["done_reason"] = done_reason
        return r

    if empty and ka == 0:
        h.app.sched.expire_runner(lm)
        h.send_json(200, reply("unload"))
        return
    caps = lm.capabilities()
    what = "chat" if chat else "generate"
    if "completion" not in caps:
        raise HTTPError(400, f"{go_q(model_s)} does not support {what}")
    if not chat and req.get("suffix") and "insert" not in caps:
        raise HTTPError(400, f"{go_q(model_s)} does not support insert")
    t0 = time.monotonic_ns()
    runner, lreq = h.schedule(lm, model_s, req.get("options"), ka)
    try:
        if empty:
            h.send_json(200, reply("load"))
            return
        _hang_if_wedged(h, lm, runner)
        runner.slots.acquire()
        try:
            h.runtime_fault(lm)
            _emit_tokens(
                h,
                runner,
                lreq,
                base=base,
                prompt=prompt,
                chat=chat,
                stream=req.get("stream"),
                t0=t0,
            )
        finally:
            runner.slots.release()
    finally:
        h.app.sched.release(runner)


def _emit_tokens(
    h: Handler,
    runner: Runner,
    lreq: LoadRequest,
    *,
    base: dict[str, Any],
    prompt: str,
    chat: bool,
    stream: Any,
    t0: int,
) -> None:
    toks, reason = _tokens(lreq.options)
    stream_on = stream is None or bool(stream)
    e0 = time.monotonic_ns()

    def piece(text: str, done: bool) -> dict[str, Any]:
        r = dict(base)
        r["created_at"] = now_utc()
        if chat:
            r["message"] = {"role": "assistant", "content": text}
        else:
            r["response"] = text
        r["done"] = done
        return r

    if stream_on:
        h.start_stream(200)
    for t in toks:
        if runner.token_seconds > 0:
            time.sleep(runner.token_seconds)
        if stream_on:
            h.stream_line(piece(t, False))
        elif h.client_gone():
            raise ClientGone()
    final = piece("" if stream_on else "".join(toks), True)
    final["done_reason"] = reason
    if not chat:
        final["context"] = [1, 2, 3]
    final.update(_metrics(lreq, t0, prompt, len(toks), time.monotonic_ns() - e0))
    if stream_on:
        h.stream_line(final)
        h.end_stream()
    else:
        h.send_json(200, final)


def h_generate(h: Handler) -> None:
    """POST /api/generate (§3.1, §2.5)."""
    _generate_or_chat(h, chat=False)


def h_chat(h: Handler) -> None:
    """POST /api/chat (§3.2)."""
    _generate_or_chat(h, chat=True)


def _embed_inputs(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw] if raw else []
    if isinstance(raw, list):
        if not all(isinstance(x, str) for x in raw):
            raise HTTPError(400, "invalid input type")
        return list(raw)
    raise HTTPError(400, "invalid input type")


def h_embed(h: Handler) -> None:
    """POST /api/embed (§3.3)."""
    req = h.bind("EmbedRequest")
    inputs = _embed_inputs(req.get("input"))
    model_s = req.get("model") or ""
    if not model_s:
        raise HTTPError(400, "model is required")
    if not parse_name(model_s).is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model {go_q(model_s)} not found, try pulling it first")
    t0 = time.monotonic_ns()
    runner, lreq = h.schedule(lm, model_s, req.get("options"), req.get("keep_alive"))
    try:
        if not inputs:
            h.send_json(200, {"model": model_s, "embeddings": []})
            return
        _hang_if_wedged(h, lm, runner)
        runner.slots.acquire()
        try:
            h.runtime_fault(lm)
            if not lm.is_embedding:
                raise HTTPError(501, NO_EMBEDDINGS)
            truncate = req.get("truncate")
            tokens = 0
            for text in inputs:
                n = max(1, len(text) // 4)
                if n > runner.context_length and truncate is False:
                    raise HTTPError(400, "the input length exceeds the context length")
                tokens += min(n, runner.context_length)
            if runner.token_seconds > 0:
                time.sleep(runner.token_seconds)
            vecs = [fake_vector(t, lm.embedding_length) for t in inputs]
        finally:
            runner.slots.release()
        h.send_json(
            200,
            {
                "model": model_s,
                "embeddings": vecs,
                "total_duration": time.monotonic_ns() - t0,
                "load_duration": lreq.loaded_ns or 120_000,
                "prompt_eval_count": tokens,
            },
        )
    finally:
        h.app.sched.release(runner)


def h_embeddings(h: Handler) -> None:
    """POST /api/embeddings, the legacy endpoint (§3.4)."""
    req = h.bind("EmbeddingsRequest")
    model_s = req.get("model") or ""
    if not model_s:
        raise HTTPError(400, "model is required")
    if not parse_name(model_s).is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s, case_insensitive=False)
    if lm is None:
        raise HTTPError(404, f"model {go_q(model_s)} not found, try pulling it first")
    runner, _ = h.schedule(lm, model_s, req.get("options"), req.get("keep_alive"))
    try:
        prompt = req.get("prompt") or ""
        if not prompt:
            h.send_json(200, {"embedding": []})
            return
        h.runtime_fault(lm)
        if not lm.is_embedding:
            raise HTTPError(500, NO_EMBEDDINGS)
        h.send_json(200, {"embedding": fake_vector(prompt, lm.embedding_length)})
    finally:
        h.app.sched.release(runner)
