"""The bench's results: ratios against the targets, the table, results.json and results.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import stats

LABELS = {
    "a": "(a)",
    "a2": "(a)x2",
    "a'": "(a')",
    "a's": "(a')s",
    "a'0": "(a')m0",
    "a0": "(a)m0",
    "b": "(b)",
    "c": "(c)",
    "d": "(d)",
    "e": "(e)",
}
THROUGHPUT_ORDER = ("a", "a0", "a2", "a'", "a'0", "a's", "b", "c", "d", "e")
LATENCY_ORDER = ("a", "a'", "b", "c", "d")

# (name, numerator, denominator, at least)
RATIOS = (
    ("(a')/(d)", "a'", "d", 0.7),
    ("(a)/(e)", "a", "e", 0.8),
    ("(a)/(b)", "a", "b", 2.0),
    ("(a)/(c)", "a", "c", 5.0),
    ("(a')s/(a')", "a's", "a'", 0.8),
    # Metrics on (the default) against off (m0: nothing counted, no endpoint).
    ("(a')/(a')m0", "a'", "a'0", 0.97),
    ("(a)/(a)m0", "a", "a0", 0.97),
)
# (what, path, percentile, at most ms)
LATENCY_TARGETS = (
    ("p99 at 200/s, (a')", "a'", "p99", 15.0),
    ("p99 at 200/s, (a)", "a", "p99", 25.0),
)
FANOUT_TARGET = ("fan-out to 1000, p99", "1000", "p99", 100.0)
SESSIONS_TARGET = 5000


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every round's rate beside it."""
    ordered = sorted(runs, key=lambda run: run["events_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [run["events_per_s"] for run in runs]}


def _ratio(results: dict[str, Any], top: str, bottom: str) -> float:
    """Median over rounds of the ratio within each round; else the ratio of the runs."""
    rounds = results.get("rounds", {})
    if top in rounds and bottom in rounds and len(rounds[top]) == len(rounds[bottom]):
        pairs = zip(rounds[top], rounds[bottom], strict=True)
        ratios = [stats.ratio(a["events_per_s"], b["events_per_s"]) for a, b in pairs]
        return stats.percentile([r for r in ratios if not math.isnan(r)], 50)
    rates = {k: v["events_per_s"] for k, v in results.get("throughput", {}).items()}
    return stats.ratio(rates.get(top, math.nan), rates.get(bottom, math.nan))


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with the value reached in this run and whether it was met."""
    out: list[dict[str, Any]] = []
    for name, top, bottom, least in RATIOS:
        value = _ratio(results, top, bottom)
        out.append(
            {
                "target": f"{name} ≥ {least:g}",
                "value": round(value, 2),
                "met": stats.check(value, least),
            }
        )
    for name, path, point, most in LATENCY_TARGETS:
        value = results.get("latency", {}).get(path, {}).get(point, math.nan)
        out.append(
            {
                "target": f"{name} < {most:g} ms",
                "value": value,
                "met": stats.check(value, most, at_most=True),
            }
        )
    name, size, point, most = FANOUT_TARGET
    value = results.get("fanout", {}).get(size, {}).get(point, math.nan)
    out.append(
        {
            "target": f"{name} < {most:g} ms",
            "value": value,
            "met": stats.check(value, most, at_most=True),
        }
    )
    held = results.get("connections", {}).get("held", math.nan)
    out.append(
        {
            "target": f"{SESSIONS_TARGET:,} sessions held",
            "value": held,
            "met": stats.check(held, SESSIONS_TARGET),
        }
    )
    return out


def _usage(run: dict[str, Any]) -> str:
    usage = run.get("usage", {})
    router, worker = usage.get("router", {}), usage.get("worker", {})
    return (
        f"{router.get('cpu_percent', math.nan):6.0f}% {router.get('peak_rss_mb', math.nan):7.0f}"
        f"  {worker.get('cpu_percent', math.nan):6.0f}% {worker.get('peak_rss_mb', math.nan):7.0f}"
    )


PROCESSES = ("router", "worker", "rabbitmq", "redis", "bench")


def cpu_per_event(run: dict[str, Any]) -> dict[str, float]:
    """Microseconds of CPU per delivered event, by process (the producer is the bench)."""
    rate = run.get("events_per_s") or math.nan
    usage = run.get("usage", {})
    return {
        name: usage[name]["cpu_percent"] / 100 / rate * 1e6
        for name in PROCESSES
        if name in usage and "cpu_percent" in usage[name]
    }


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


W = 48  # width of the first column


def table(results: dict[str, Any]) -> str:
    """The printed report: one section per measurement, then the targets."""
    lines: list[str] = []
    add = lines.append
    usage_head = "router CPU  peak MB  worker CPU  peak MB"
    add(f"{'throughput, enqueue → subscriber':{W}} {'events/s':>9}   {usage_head}")
    for key in THROUGHPUT_ORDER:
        run = results.get("throughput", {}).get(key)
        if run:
            name = f"{LABELS[key]:6} {run['path']}"[:W]
            rounds = run.get("rounds")
            seen = f"  rounds: {', '.join(_num(r, 0) for r in rounds)}" if rounds else ""
            add(f"{name:{W}} {_num(run['events_per_s'], 0):>9}  {_usage(run)}{seen}")
    add("")
    add(f"{'CPU per delivered event (µs)':{W}} " + " ".join(f"{p:>8}" for p in PROCESSES))
    for key in THROUGHPUT_ORDER:
        run = results.get("throughput", {}).get(key)
        if run and key in ("a", "a0", "a'", "a'0", "a's", "d", "e"):
            cost = cpu_per_event(run)
            cells = " ".join(f"{_num(cost.get(p), 0):>8}" for p in PROCESSES)
            add(f"{LABELS[key]:{W}} {cells}")
    add("")
    points = " ".join(f"{p:>7}" for p in ("p50", "p95", "p99", "max"))
    add(f"{'latency at 200 events/s (ms)':{W}} {points}  {usage_head}")
    for key in LATENCY_ORDER:
        run = results.get("latency", {}).get(key)
        if run:
            name = f"{LABELS[key]:6} {run['path']}"[:W]
            cells = " ".join(f"{_num(run[p], 1):>7}" for p in ("p50", "p95", "p99", "max"))
            add(f"{name:{W}} {cells} {_usage(run)}")
    add("")
    heads = f"{'p50':>6} {'p99':>6} {'events':>7} {'missed':>6}"
    add(f"{'fan-out via (a): until the last has it (ms)':{W}} {heads}")
    for size, run in results.get("fanout", {}).items():
        add(
            f"{f'{int(size):,} subscribers':{W}} {_num(run['p50']):>6} {_num(run['p99']):>6}"
            f" {run['events']:>7} {run['incomplete']:>6}"
        )
    chat = results.get("chat", {})
    if chat:
        add("")
        heads = f"{'msgs/s':>7} {'p50':>6} {'p99':>6} {'sent':>6} {'errors':>6} {'missed':>6}"
        add(f"{'chat via tidings.chat.send: until all have it':{W}} {heads}")
        for key, what in (("latency", "to the other member"), ("room", "as fast as it goes")):
            run = chat.get(key)
            if run:
                name = f"{run['members']:,} member(s), {what}"
                offered = f" at {run['rate']:g}/s" if run.get("rate") else ""
                add(
                    f"{name + offered:{W}} {_num(run['messages_per_s'], 0):>7}"
                    f" {_num(run['p50']):>6} {_num(run['p99']):>6} {run['sent']:>6}"
                    f" {run['errors']:>6} {run['incomplete']:>6}"
                )
    conn = results.get("connections")
    if conn:
        add("")
        add(
            f"connections: {conn['held']:,} of {conn['sessions']:,} idle authenticated WebSocket"
            f" sessions held,"
        )
        add(
            f"  all joined in {conn['connect_seconds']:.1f} s"
            f" ({conn['client_processes']} client processes);"
        )
        add(
            f"  router memory {conn['router_rss_before_mb']:.0f}"
            f" → {conn['router_rss_after_mb']:.0f} MB:"
            f" {conn['router_kib_per_session']:.1f} KiB per session"
        )
    add("")
    add(f"{'target (ratios within this run)':{W}} {'reached':>9}  met")
    for row in results.get("targets", []):
        value = row["value"]
        shown = (
            _num(value, 2) if isinstance(value, float) else f"{value:,}" if value == value else "—"
        )
        met = "not run" if shown == "—" else "yes" if row["met"] else "NO"
        add(f"{row['target']:{W}} {shown:>9}  {met}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """NaN (a run that measured nothing) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_plain(results), indent=2, ensure_ascii=False) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Four panels: throughput, latency percentiles, fan-out, and CPU per throughput run."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle("tidings bench — " + results.get("machine", {}).get("summary", ""))

    runs = results.get("throughput", {})
    keys = [k for k in THROUGHPUT_ORDER if k in runs]
    ax = axes[0][0]
    bars = ax.bar(
        [LABELS[k] for k in keys], [runs[k]["events_per_s"] for k in keys], color="#3a7ca5"
    )
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_title("throughput, enqueue → subscriber (events/s)")

    lat = results.get("latency", {})
    keys = [k for k in LATENCY_ORDER if k in lat]
    ax = axes[0][1]
    width = 0.2
    for i, point in enumerate(("p50", "p95", "p99", "max")):
        xs = [j + (i - 1.5) * width for j in range(len(keys))]
        ax.bar(xs, [lat[k][point] for k in keys], width, label=point)
    ax.set_xticks(range(len(keys)), [LABELS[k] for k in keys])
    ax.set_yscale("log")
    ax.set_title("latency at 200 events/s (ms, log scale)")
    ax.legend(fontsize=8)

    fan = results.get("fanout", {})
    ax = axes[1][0]
    sizes = list(fan)
    for i, point in enumerate(("p50", "p99")):
        xs = [j + (i - 0.5) * 0.35 for j in range(len(sizes))]
        ax.bar(xs, [fan[s][point] for s in sizes], 0.35, label=point)
    ax.set_xticks(range(len(sizes)), [f"{int(s):,}" for s in sizes])
    ax.set_title("fan-out: until the last subscriber has it (ms)")
    ax.set_xlabel("subscribers")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    keys = [k for k in THROUGHPUT_ORDER if k in runs]
    groups = ("router", "worker", "rabbitmq", "clients", "bench")
    bottom = [0.0] * len(keys)
    for group in groups:
        values = [runs[k].get("usage", {}).get(group, {}).get("cpu_percent", 0.0) for k in keys]
        ax.bar([LABELS[k] for k in keys], values, bottom=bottom, label=group)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.axhline(200, color="grey", linestyle="--", linewidth=0.8)
    ax.set_title("CPU during throughput runs (% of one core; 2 cores = 200%)")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
