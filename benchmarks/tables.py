"""The Markdown table of medians and spread, with each target and whether it was met."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.analysis import Summary, median, percentile, slope, trend
from benchmarks.contestants import PRODUCT, SHELL
from benchmarks.measuring import RunResult, ScaleResult

MB = 1024 * 1024


def fmt(value: float | None, unit: str, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f} {unit}".strip()


def spread(s: Summary, unit: str, digits: int = 0, scale: float = 1.0) -> str:
    if s.n == 0:
        return "–"
    m, lo, hi = s.median * scale, s.low * scale, s.high * scale
    if s.n == 1:
        return fmt(m, unit, digits)
    return f"{fmt(m, unit, digits)} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratio(a: Summary, b: Summary) -> str:
    if a.n == 0 or b.n == 0 or a.median == 0 or math.isnan(a.median) or math.isnan(b.median):
        return "–"
    return f"{b.median / a.median:.1f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def values(results: Sequence[RunResult], who: str, get: Callable[[RunResult], Any]) -> list[float]:
    out = []
    for r in results:
        if r.who == who and r.pinned:
            v = get(r)
            if v is not None:
                out.append(float(v))
    return out


def serve_started(r: RunResult) -> float | None:
    tl = r.timeline
    if tl is None or tl.serve_start is None:
        return None
    return tl.serve_start - tl.launched


def over_ideal(r: RunResult) -> float | None:
    if r.ideal is None or r.to_all_pinned is None:
        return None
    return r.to_all_pinned - r.ideal


def serve_start_to_ready(r: RunResult) -> float | None:
    tl = r.timeline
    if tl is None or tl.serve_start is None or tl.serve_ready is None:
        return None
    return tl.serve_ready - tl.serve_start


def table(
    results: Sequence[RunResult], scale: ScaleResult | None, *, real: bool = False
) -> list[str]:
    """The Markdown table. `real`: measured on the real Ollama (benchmarks/real.py), whose
    `ollama list` is the real Go CLI."""
    rows = [
        "| Measure | Target | ollama-preloader: median (min–max) | baseline.sh: median (min–max)"
        " | Baseline ÷ preloader | Met |",
        "|---|---|---|---|---|---|",
    ]

    def both(get: Callable[[RunResult], Any]) -> tuple[Summary, Summary]:
        return Summary.of(values(results, PRODUCT, get)), Summary.of(values(results, SHELL, get))

    p, b = both(lambda r: r.ready_detection)
    rows.append(
        f"| 1. Ready detection | ≤ 50 ms | {spread(p, 'ms', 0, 1000)} | {spread(b, 'ms', 0, 1000)}"
        f" | {ratio(p, b)} | {verdict(p.median * 1000 <= 50 if p.n else None)} |"
    )
    p, b = both(lambda r: r.to_all_pinned)
    pi, bi = both(lambda r: r.ideal)
    over_p = Summary.of(values(results, PRODUCT, over_ideal))
    over_b = Summary.of(values(results, SHELL, over_ideal))
    allowed = max(0.05 * pi.median, 0.3) if pi.n else math.nan
    rows.append(
        f"| 2. Time to all pinned (from Ollama answering) | ideal + max(5%, 0.3 s) |"
        f" {spread(p, 's', 2)} | {spread(b, 's', 2)} | {ratio(p, b)} |"
        f" {verdict(over_p.median <= allowed if over_p.n else None)} |"
    )
    rows.append(
        f"| 2a. … the ideal for the same run | | {spread(pi, 's', 2)} | {spread(bi, 's', 2)} | | |"
    )
    rows.append(
        f"| 2b. … over the ideal (allowed {fmt(allowed, 's', 2)}) | ≤ {fmt(allowed, 's', 2)} |"
        f" {spread(over_p, 's', 2)} | {spread(over_b, 's', 2)} | | |"
    )
    p, b = both(serve_started)
    rows.append(
        f"| 2c. Launch to `ollama serve` started | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        " | | |"
    )
    p, b = both(serve_start_to_ready)
    rows.append(
        f"| 2e. `ollama serve` started to answering | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        " | | |"
    )
    p, b = both(lambda r: r.launch_to_all_pinned)
    rows.append(
        f"| 2d. Launch to all pinned (wall clock) | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        f" | {ratio(p, b)} | |"
    )
    lat = [
        float(x["latency"])
        for r in results
        if r.who == PRODUCT
        for x in r.repairs
        if x["latency"] is not None
    ]
    missed = sum(1 for r in results if r.who == PRODUCT for x in r.repairs if x["latency"] is None)
    base_trials = [x for r in results if r.who == SHELL for x in r.repairs]
    base_fixed = sum(1 for x in base_trials if x["latency"] is not None)
    waited = max((float(x["waited"]) for x in base_trials), default=0.0)
    p95 = percentile(lat, 95) if lat else math.nan
    base_text = (
        f"never ({len(base_trials) - base_fixed} of {len(base_trials)} not repaired in"
        f" {waited:g} s)"
        if base_trials
        else "–"
    )
    rows.append(
        f"| 3. Repair latency, p95 (median; n) | ≤ 2 s p95 | {fmt(p95, 's', 2)}"
        f" ({fmt(median(lat) if lat else math.nan, 's', 2)}; n={len(lat)}"
        f"{f', {missed} not repaired' if missed else ''}) | {base_text} | ∞ |"
        f" {verdict(p95 <= 2.0 and not missed if lat else None)} |"
    )
    reloads = [
        float(x["reloaded"])
        for r in results
        if r.who == PRODUCT
        for x in r.repairs
        if x.get("reloaded") is not None
    ]
    hows = sorted({str(x["how"]) for r in results if r.who == PRODUCT for x in r.repairs})
    by_how = ", ".join(
        f"{how} {fmt(median(found), 's', 2)}"
        for how in hows
        if (
            found := [
                float(x["latency"])
                for r in results
                if r.who == PRODUCT
                for x in r.repairs
                if x["how"] == how and x["latency"] is not None
            ]
        )
    )
    rows.append(
        f"| 3a. … to loaded and pinned again, p95 (median) | |"
        f" {fmt(percentile(reloads, 95) if reloads else math.nan, 's', 2)}"
        f" ({fmt(median(reloads) if reloads else math.nan, 's', 2)}) | | | |"
    )
    rows.append(f"| 3b. … repair latency by cause, median | | {by_how or '–'} | | | |")
    p, b = both(lambda r: r.idle_cpu_percent)
    rows.append(
        f"| 4. Idle CPU (share of one core) | ≤ 0.5% | {spread(p, '%', 2)} | {spread(b, '%', 2)}"
        f" | | {verdict(p.median <= 0.5 if p.n else None)} |"
    )
    p, b = both(lambda r: r.idle_rss)
    rows.append(
        f"| 4. Idle RSS | ≤ 60 MB | {spread(p, 'MB', 1, 1 / MB)} | {spread(b, 'MB', 1, 1 / MB)}"
        f" | | {verdict(p.median / MB <= 60 if p.n else None)} |"
    )
    p, b = both(lambda r: r.peak_rss)
    rows.append(
        f"| 4a. Peak RSS (whole run) | | {spread(p, 'MB', 1, 1 / MB)}"
        f" | {spread(b, 'MB', 1, 1 / MB)} | | |"
    )
    # On the fake, `ollama list` is the fake's Python CLI (the page's footnote says so).
    listing = "`ollama list`" if real else "`ollama list`*"
    health = [h for r in results if r.who == PRODUCT for h in r.health]
    shell_health = [h for r in results if r.who == SHELL for h in r.health]
    hs = Summary.of([h["seconds"] for h in shell_health])
    hm = Summary.of([h["max_rss"] for h in shell_health])
    missing = [h for h in health if h["code"] not in (0, 1)]
    if health and not missing:
        ws = Summary.of([h["seconds"] for h in health])
        ms = Summary.of([h["max_rss"] for h in health])
        rows.append(
            f"| 5. Health check wall time | ≤ 150 ms | {spread(ws, 'ms', 0, 1000)}"
            f" | {listing}: {spread(hs, 'ms', 0, 1000)} | | {verdict(ws.median <= 0.15)} |"
        )
        rows.append(
            f"| 5. Health check peak RSS | ≤ 30 MB | {spread(ms, 'MB', 1, 1 / MB)}"
            f" | {listing}: {spread(hm, 'MB', 1, 1 / MB)} | |"
            f" {verdict(ms.median / MB <= 30)} |"
        )
    else:
        why = "not measured"
        if missing:
            code, output = missing[0]["code"], missing[0]["output"]
            why = f"exit {code}"
            if "No such command" in output:
                why += ": no `health` command yet"
        rows.append(f"| 5. Health check | ≤ 150 ms, ≤ 30 MB | not available ({why}) | | | – |")
    floor = [h for r in results if r.who == PRODUCT for h in r.cli_floor]
    if floor:
        ws = Summary.of([h["seconds"] for h in floor])
        ms = Summary.of([h["max_rss"] for h in floor])
        rows.append(
            f"| 5a. CLI start floor (`ollama-preloader --version`) | | {spread(ws, 'ms', 0, 1000)},"
            f" {spread(ms, 'MB', 1, 1 / MB)} | | | |"
        )
    if scale is not None:
        rows.extend(scale_rows(scale))
    return rows


def warm_rss(scale: ScaleResult) -> int:
    """RSS once the first block has run: allocator and caches have settled by then."""
    return next((r for c, r in scale.rss if c >= scale.block), scale.rss[0][1])


FLAT_TREND = 0.10  # the fitted change over the run may be at most this share of the median
FLAT_RSS = 0.05


def scale_flat(scale: ScaleResult) -> bool | None:
    """Flat: the fitted trends of the cycle period and of the CPU per cycle, over all blocks,
    stay within 10% of their medians, and RSS grows by less than 5% from the end of the first
    block to the end."""
    if not scale.pinned or len(scale.period_ms) < 2 or len(scale.cpu_ms) < 2 or not scale.rss:
        return None
    growth = (scale.rss[-1][1] - warm_rss(scale)) / warm_rss(scale)
    return (
        abs(trend(scale.period_ms)) <= FLAT_TREND
        and abs(trend(scale.cpu_ms)) <= FLAT_TREND
        and growth < FLAT_RSS
    )


def series(values: Sequence[float], unit: str, digits: int) -> str:
    s = Summary.of(values)
    return (
        f"{spread(s, unit, digits)}, first {values[0]:.{digits}f} → last {values[-1]:.{digits}f},"
        f" trend {trend(values) * 100:+.0f}%"
    )


def scale_rows(scale: ScaleResult) -> list[str]:
    if not scale.pinned or not scale.rss or not scale.period_ms or not scale.cpu_ms:
        return [f"| 6. Scale | flat | failed: {scale.error} | | | – |"]
    rss0 = warm_rss(scale)
    growth = (scale.rss[-1][1] - rss0) / rss0
    kb_per_k = slope([(c / 1000, r / 1024) for c, r in scale.rss if c >= scale.block])
    label = f"{scale.models} models, {scale.cycles} cycles at {scale.interval * 1000:g} ms"
    return [
        f"| 6. Scale ({label}): cycle period, median of {scale.block}-cycle blocks (range)"
        f" | trend ≤ ±{FLAT_TREND:.0%} | {series(scale.period_ms, 'ms', 1)} | | |"
        f" {verdict(scale_flat(scale))} |",
        f"| 6. … supervisor CPU per cycle, per block | trend ≤ ±{FLAT_TREND:.0%} |"
        f" {series(scale.cpu_ms, 'ms', 2)} | | | |",
        f"| 6. … RSS after {scale.block} cycles → end | < +{FLAT_RSS:.0%} |"
        f" {rss0 / MB:.1f} → {scale.rss[-1][1] / MB:.1f} MB ({growth * 100:+.1f}%,"
        f" {kb_per_k:+.0f} KB per 1000 cycles) | | | |",
    ]
