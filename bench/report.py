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

# (name, numerator, denominator, at least); EVERY_ROUND: met only if met in each round.
RATIOS = (
    ("(a')/(d)", "a'", "d", 0.75),
    ("(a)/(e)", "a", "e", 0.9),
    ("(a)/(b)", "a", "b", 2.0),
    ("(a)/(c)", "a", "c", 5.0),
    ("(a')s/(a')", "a's", "a'", 0.8),
    # Metrics on (the default) against off (m0: nothing counted, no endpoint).
    ("(a')/(a')m0", "a'", "a'0", 0.97),
    ("(a)/(a)m0", "a", "a0", 0.97),
)
EVERY_ROUND = ("(a')/(d)",)
# (what, path, process, at most µs of CPU per delivered event, in the throughput run)
CPU_TARGETS = (
    ("worker CPU per raw event", "a'", "worker", 50.0),
    ("worker CPU per task", "a", "worker", 70.0),
)
# (what, path, percentile, at most ms)
LATENCY_TARGETS = (
    ("p99 at 200/s, (a')", "a'", "p99", 15.0),
    ("p99 at 200/s, (a)", "a", "p99", 25.0),
)
FANOUT_TARGET = ("fan-out to 1000, p99", "1000", "p99", 100.0)
SESSIONS_TARGET = 5000
# Idle sessions held over the two nodes of shared mode.
NODE_SESSIONS_TARGET = 20000
# Process groups of the two-node runs, in the CPU table; "server" is their sum.
NODE_PROCESSES = ("router a", "router b", "workers", "rabbitmq", "redis")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every round's rate beside it."""
    ordered = sorted(runs, key=lambda run: run["events_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [run["events_per_s"] for run in runs]}


def _ratio(results: dict[str, Any], top: str, bottom: str, lowest: bool = False) -> float:
    """Median (or the lowest, `lowest`) over rounds of the ratio within each round; else
    the ratio of the runs."""
    rounds = results.get("rounds", {})
    if top in rounds and bottom in rounds and len(rounds[top]) == len(rounds[bottom]):
        pairs = zip(rounds[top], rounds[bottom], strict=True)
        ratios = [stats.ratio(a["events_per_s"], b["events_per_s"]) for a, b in pairs]
        ratios = [r for r in ratios if not math.isnan(r)]
        if lowest:
            return min(ratios, default=math.nan)
        return stats.percentile(ratios, 50)
    rates = {k: v["events_per_s"] for k, v in results.get("throughput", {}).items()}
    return stats.ratio(rates.get(top, math.nan), rates.get(bottom, math.nan))


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with the value reached in this run and whether it was met."""
    out: list[dict[str, Any]] = []
    for name, top, bottom, least in RATIOS:
        every = name in EVERY_ROUND
        value = _ratio(results, top, bottom, lowest=every)
        out.append(
            {
                "target": f"{name} ≥ {least:g}" + (", every round" if every else ""),
                "value": round(value, 2),
                "met": stats.check(value, least),
            }
        )
    for name, path, process, most in CPU_TARGETS:
        run = results.get("throughput", {}).get(path)
        value = cpu_per_event(run).get(process, math.nan) if run else math.nan
        out.append(
            {
                "target": f"{name} ≤ {most:g} µs",
                "value": round(value) if not math.isnan(value) else value,
                "met": stats.check(value, most, at_most=True),
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
    missed = results.get("restart", {}).get("missed", math.nan)
    out.append(
        {
            "target": "router restart, events missed = 0",
            "value": missed,
            "met": stats.check(missed, 0, at_most=True),
        }
    )
    held = _two_node_sessions(results).get("held", math.nan)
    out.append(
        {
            "target": f"{NODE_SESSIONS_TARGET:,} sessions held over two nodes",
            "value": held,
            "met": stats.check(held, NODE_SESSIONS_TARGET),
        }
    )
    return out


def _two_node_sessions(results: dict[str, Any]) -> dict[str, Any]:
    runs = [run for run in results.get("sessions", {}).values() if len(run.get("nodes", {})) > 1]
    return max(runs, key=lambda run: run["sessions"], default={})


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


def against_router(throughput: dict[str, Any]) -> dict[str, float]:
    """The worker's CPU per event in (a') and (a) over the router's in (d), this run."""
    direct = throughput.get("d")
    router = cpu_per_event(direct).get("router", math.nan) if direct else math.nan
    shares = {}
    for name, path, process, _ in CPU_TARGETS:
        run = throughput.get(path)
        if run and not math.isnan(router):
            shares[name.removeprefix("worker CPU ")] = stats.ratio(
                cpu_per_event(run).get(process, math.nan), router
            )
    return shares


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
    # A section only if it ran (--only runs some).
    throughput = results.get("throughput", {})
    if throughput:
        add(f"{'throughput, enqueue → subscriber':{W}} {'events/s':>9}   {usage_head}")
        for key in THROUGHPUT_ORDER:
            run = throughput.get(key)
            if run:
                name = f"{LABELS[key]:6} {run['path']}"[:W]
                rounds = run.get("rounds")
                seen = f"  rounds: {', '.join(_num(r, 0) for r in rounds)}" if rounds else ""
                add(f"{name:{W}} {_num(run['events_per_s'], 0):>9}  {_usage(run)}{seen}")
        add("")
        add(f"{'CPU per delivered event (µs)':{W}} " + " ".join(f"{p:>8}" for p in PROCESSES))
        for key in THROUGHPUT_ORDER:
            run = throughput.get(key)
            if run and key in ("a", "a0", "a'", "a'0", "a's", "d", "e"):
                cost = cpu_per_event(run)
                cells = " ".join(f"{_num(cost.get(p), 0):>8}" for p in PROCESSES)
                add(f"{LABELS[key]:{W}} {cells}")
        shares = against_router(throughput)
        if shares:
            # Machines of one kind differ by more than the CPU targets' margins:
            # the router's own cost in (d), measured in the same run, is the yardstick.
            told = ", ".join(f"{name} {_num(share, 2)}" for name, share in shares.items())
            add(f"worker CPU per event over the router's in (d): {told}")
    if results.get("latency"):
        add("")
        points = " ".join(f"{p:>7}" for p in ("p50", "p95", "p99", "max"))
        add(f"{'latency at 200 events/s (ms)':{W}} {points}  {usage_head}")
        for key in LATENCY_ORDER:
            run = results["latency"].get(key)
            if run:
                name = f"{LABELS[key]:6} {run['path']}"[:W]
                cells = " ".join(f"{_num(run[p], 1):>7}" for p in ("p50", "p95", "p99", "max"))
                add(f"{name:{W}} {cells} {_usage(run)}")
    if results.get("fanout"):
        add("")
        heads = f"{'p50':>6} {'p99':>6} {'events':>7} {'missed':>6}"
        add(f"{'fan-out via (a): until the last has it (ms)':{W}} {heads}")
        for size, run in results["fanout"].items():
            add(
                f"{f'{int(size):,} subscribers':{W}} {_num(run['p50']):>6}"
                f" {_num(run['p99']):>6} {run['events']:>7} {run['incomplete']:>6}"
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
    lines += _node_lines(results)
    add("")
    add(f"{'target (ratios within this run)':{W}} {'reached':>9}  met")
    for row in results.get("targets", []):
        value = row["value"]
        # None: NaN read back from results.json.
        shown = (
            _num(value, 2)
            if value is None or isinstance(value, float)
            else f"{value:,}"
            if value == value
            else "—"
        )
        met = "not run" if shown == "—" else "yes" if row["met"] else "NO"
        add(f"{row['target']:{W}} {shown:>9}  {met}")
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def _node_lines(results: dict[str, Any]) -> list[str]:
    """The two-node sections: idle sessions, fan-out split over the nodes, the restart."""
    lines: list[str] = []
    add = lines.append
    idle = results.get("sessions", {})
    if idle:
        add("")
        heads = f"{'held':>7} {'joined in':>9}  KiB per session (router MB at start → held)"
        add(f"{'idle sessions, shared mode':{W}} {heads}")
        for run in idle.values():
            per = ", ".join(
                f"{node} {n['router_kib_per_session']:.1f}"
                f" ({n['router_rss_start_mb']:.0f} → {n['router_rss_after_mb']:.0f})"
                for node, n in run["nodes"].items()
            )
            where = _where({node: n["sessions"] for node, n in run["nodes"].items()})
            add(f"{where:{W}} {run['held']:>7,} {run['wall_seconds']:>7.1f} s  {per}")
            if run["held"] < run["sessions"]:
                limits = ", ".join(
                    f"{node}: fds {n['fd_limit']:,}, max_connections {n['max_connections']:,}"
                    for node, n in run["nodes"].items()
                )
                add(
                    f"  not all held: failures {run['failures'] or 'none'};"
                    f" joining {'finished' if run['finished_joining'] else 'timed out'};"
                    f" {limits}; local ports {run['local_ports']:,}"
                )
    fan = results.get("nodes", {})
    if fan:
        add("")
        heads = f"{'p50':>6} {'p99':>6} {'events':>7} {'missed':>6}"
        add(f"{'two nodes, shared mode: fan-out via (a) (ms)':{W}} {heads}")
        for run in fan.values():
            add(
                f"{_where(run['per_node']):{W}} {_num(run['p50']):>6} {_num(run['p99']):>6}"
                f" {run['events']:>7} {run['incomplete']:>6}"
            )
        heads = " ".join(f"{p:>8}" for p in (*NODE_PROCESSES, "server"))
        add(f"{'  CPU (µs) above idle, per copy and per event':{W}} {heads}")
        for run in fan.values():
            for what, key, digits in (
                ("copy", "cpu_us_per_copy", 1),
                ("event", "cpu_us_per_event", 0),
            ):
                cost = run.get(key, {})
                server = sum(cost.get(p) or 0.0 for p in NODE_PROCESSES)
                cells = " ".join(f"{_num(cost.get(p), digits):>8}" for p in NODE_PROCESSES)
                name = f"  {_where(run['per_node'])}, per {what}"
                add(f"{name:{W}} {cells} {_num(server, digits):>8}")
    rec = results.get("restart")
    if rec:
        add("")
        add(
            f"router restart, shared mode: {rec['clients']:,} clients recovering"
            f" at {rec['rate']:g} events/s"
        )
        add(
            f"  router stopped in {rec['router_stop_s']:.1f} s, back {rec['router_down_s']:.1f} s"
            f" after the stop; clients in again after p50 {_num(rec['rejoin_p50_s'])} s (backoff)"
        )
        add(
            f"  every event again, from the stop: p50 {_num(rec['p50_s'])} s,"
            f" p99 {_num(rec['p99_s'])} s, max {_num(rec['max_s'])} s"
            f" ({rec['recovered_clients']:,} of {rec['clients']:,} clients);"
        )
        add(
            f"    of which catching up after the rejoin: p50 {_num(rec['catch_up_p50_s'], 2)} s,"
            f" p99 {_num(rec['catch_up_p99_s'], 2)} s"
        )
        add(
            f"  events missed {rec['missed']:,}, history_gap {rec['gaps']:,},"
            f" catch-up errors {rec['errors']:,}; {rec['from_history']:,} from the history,"
            f" {rec['duplicates']:,} duplicates dropped"
        )
    return lines


def _where(per_node: dict[str, int]) -> str:
    """`1,000 on node a`, `2,000 over nodes a and b`."""
    total = sum(per_node.values())
    names = sorted(per_node)
    if len(names) == 1:
        return f"{total:,} on node {names[0]} only"
    return f"{total:,} over nodes {' and '.join(names)}"


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

    two_nodes = bool(results.get("nodes") or results.get("restart"))
    rows = 3 if two_nodes else 2
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.5 * rows))
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

    if two_nodes:
        _plot_nodes(axes[2][0], results.get("nodes", {}))
        _plot_restart(axes[2][1], results.get("restart", {}))

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_nodes(ax: Any, fan: dict[str, Any]) -> None:
    """CPU per copy by process, stacked, per two-node fan-out run; latency in the labels."""
    runs = list(fan.values())
    names = [
        f"{_where(run['per_node'])}\np50 {_num(run['p50'])} / p99 {_num(run['p99'])} ms"
        for run in runs
    ]
    bottom = [0.0] * len(runs)
    for group in NODE_PROCESSES:
        values = [run.get("cpu_us_per_copy", {}).get(group, 0.0) or 0.0 for run in runs]
        ax.bar(names, values, bottom=bottom, label=group)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("two nodes, fan-out: CPU above idle per delivered copy (µs)")
    ax.legend(fontsize=8)


def _plot_restart(ax: Any, rec: dict[str, Any]) -> None:
    """Each client's seconds from the router's stop until it had every event again."""
    clients = rec.get("clients") or 1
    for key, label in (("rejoin_s", "signed in again"), ("recovery_s", "every event again")):
        seconds = rec.get(key) or []
        if seconds:
            share = [100.0 * (i + 1) / clients for i in range(len(seconds))]
            ax.step(seconds, share, where="post", label=label)
    if rec.get("router_down_s") is not None:
        ax.axvline(rec["router_down_s"], color="grey", linestyle="--", linewidth=0.8)
        where = ax.get_xaxis_transform()  # x in seconds, y in the panel's height
        ax.text(
            rec["router_down_s"], 0.5, " router back", fontsize=8, color="grey", transform=where
        )
        ax.set_xlim(left=0)
        ax.set_ylim(0, 102)
        ax.legend(fontsize=8, loc="upper left")
    ax.set_title(
        f"router restart: {rec.get('clients', 0):,} clients at {rec.get('rate', 0):g} events/s"
    )
    ax.set_xlabel("seconds since the router stopped")
    ax.set_ylabel("% of clients")
