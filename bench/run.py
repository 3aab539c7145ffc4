"""mgmtd benchmarks: `make bench` (full, ~6 min) or `make bench-quick` (< 2 min).

Every figure is printed next to a reference measured in the same run, in one
table; the results go to bench/results/latest.json and a bar chart of the
ratios to bench/results/latest.png (matplotlib) or latest.svg (without it).
See bench/README.md for what each figure means."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import cluster, common, engine, exports, kinds, puppet, report, scale  # noqa: E402
from bench.common import Deadline, ForeignCpu, median  # noqa: E402
from bench.report import Row  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

PROFILES = {
    #                  formation runs, sizes, cold/no-change runs per size, edits, changes,
    #                  files of the collector's own in the export figure's second run, memory N
    "quick": dict(formation_runs=1, sizes=(100, 1000), repeats={100: 2, 1000: 1}, edits=50,
                  changes=50, collector_files=1000, memory=1000, startup_runs=3, packages=50, svc_rounds=20,
                  scale_hosts=(20, 50)),
    "full": dict(formation_runs=3, sizes=(100, 1000, 10000), repeats={100: 5, 1000: 3, 10000: 2},
                 edits=200, changes=200, collector_files=10000, memory=10000, startup_runs=5,
                 packages=50, svc_rounds=100, scale_hosts=(50, 200, 500)),
}
GRACE = 3.0
BIG = 100_000   # --big: the engine figures (growth table) at this many files too


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def attempt(raw: dict, name: str, seconds: float, func, *args):
    """Runs one scenario under its deadline; an error is recorded, not fatal."""
    # the last scenario's writes go to disk now, not during this one's figures
    os.sync()
    began = time.monotonic()
    load = os.getloadavg()[0]
    foreign = ForeignCpu()
    say(f"[bench] {name} (deadline {seconds:.0f}s, load {load:.1f}) ...")
    try:
        with Deadline(seconds, name) as deadline:
            result = func(*args, deadline)
        raw[name] = {**result, "load_before": load, "foreign_cpu": foreign.share(),
                     "scenario_seconds": time.monotonic() - began}
        say(f"[bench] {name}: done in {time.monotonic() - began:.1f}s "
            f"(other processes used {raw[name]['foreign_cpu']:.0%} of the CPUs)")
        return result
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a failed scenario must not stop the others
        raw[name] = {"error": f"{type(err).__name__}: {err}", "load_before": load,
                     "foreign_cpu": foreign.share(),
                     "traceback": traceback.format_exc()}
        say(f"[bench] {name}: FAILED after {time.monotonic() - began:.1f}s: {err}")
        return None


def formation(raw: dict, runs: int) -> list[Row]:
    kinds = (("static", cluster.static_bootstrap, 60), ("learner", cluster.learner_floor, 90),
             ("mgmtd", cluster.mgmtd_formation, 150))
    times: dict[str, list[float]] = {k: [] for k, _, _ in kinds}
    for run in range(runs):
        for kind, func, limit in kinds:
            result = attempt(raw, f"formation-{kind}-{run + 1}", limit, func)
            if result:
                times[kind].append(result["seconds"])
    value = median(times["mgmtd"])
    error = "" if value is not None else "mgmtd formation failed (see latest.json)"
    n = f" (median of {runs})" if runs > 1 else ""
    return [
        Row(f"1 formation, 3 nodes -> 3 healthy voters{n}", value, "s",
            "static 3-member etcd bootstrap", median(times["static"]), error),
        Row(f"1 formation, 3 nodes -> 3 healthy voters{n}", value, "s",
            "hand-driven learner add/promote floor", median(times["learner"]), error),
    ]


def repair(raw: dict) -> list[Row]:
    result = attempt(raw, "repair", 180, cluster.repair, GRACE)
    if not result:
        return [Row("2 repair: SIGKILL a voter -> 3 healthy voters", None, "s",
                    error=raw["repair"]["error"])]
    return [
        Row("2 repair: SIGKILL a voter -> 3 healthy voters", result["seconds"], "s",
            "--grace-period (waited on purpose)", GRACE, compare=False),
        Row("2 repair minus the grace period", result["minus_grace"], "s"),
    ]


def engine_rows(raw: dict, profile: dict) -> tuple[list[Row], dict[int, dict]]:
    rows, sizes = [], {}
    base = attempt(raw, "engine-startup", 60, engine.empty_baseline, profile["startup_runs"])
    if not base:
        return [Row("3 engine startup (empty graph)", None, "s", error=raw["engine-startup"]["error"])], {}
    rows.append(Row("3 engine startup+exit, empty graph (subtracted below)", base["startup"], "s"))
    rows.append(Row("3 engine CPU (user+sys), empty graph", base["cpu"], "s"))
    for count in profile["sizes"]:
        repeats = profile["repeats"][count]
        limit = 120 + count * 0.015 * (repeats + 3)
        name = f"engine-{count}"
        result = attempt(raw, name, limit, engine.engine_size, count, profile["edits"], repeats)
        if not result:
            sizes[count] = {"error": raw[name]["error"]}
            rows.append(Row(f"3 engine, {count} files", None, "s", error=raw[name]["error"]))
            continue
        sizes[count] = result
        rows += [
            Row(f"3 engine, {count} files: cold converge", result["cold"], "s",
                "python loop, atomic writes", result["floor_cold"]),
            Row(f"3 engine, {count} files: no-change pass", result["nochange"], "s",
                "python loop, read + compare", result["floor_nochange"]),
            Row(f"3 engine, {count} files: cold converge, CPU", result["cold_cpu"], "s",
                "python loop, CPU", result["floor_cold_cpu"]),
            Row(f"3 engine, {count} files: no-change pass, CPU", result["nochange_cpu"], "s",
                "python loop, CPU", result["floor_nochange_cpu"]),
            Row(f"3 engine, {count} files: no-change pass, in the engine", result["pass"], "s",
                "python loop, read + compare", result["floor_nochange"]),
            Row(f"3 engine, {count} files: no-change pass, in the engine, CPU", result["pass_cpu"], "s",
                "python loop, CPU", result["floor_nochange_cpu"]),
            Row(f"3 engine, {count} files: repair p50", result["repair"]["p50"], "ms",
                "inotify + rewrite agent p50", result["floor_repair"]["p50"]),
            Row(f"3 engine, {count} files: repair p99", result["repair"]["p99"], "ms",
                "inotify + rewrite agent p99", result["floor_repair"]["p99"]),
        ]
        rows += puppet.rows(count, result)
    return rows, sizes


def export_rows(raw: dict, changes: int, local_files: int) -> list[Row]:
    result = attempt(raw, "export-collect", 150, exports.export_collect, changes)
    if not result:
        return [Row("4 export -> collect", None, "ms", error=raw["export-collect"]["error"])]
    rows = [
        *(Row(f"4 export -> collect {p} ({changes} changes)", result[p], "ms",
              f"raw etcd put -> watch {p}", result[f"raw_{p}"]) for p in ("p50", "p90", "p99")),
        *(Row(f"4   of which graph file -> etcd (exporter) {p}", result[f"exporter_{p}"], "ms")
          for p in ("p50", "p90")),
        *(Row(f"4   of which etcd -> file on disk (collector) {p}", result[f"collector_{p}"], "ms")
          for p in ("p50", "p90")),
    ]
    # the same with a collector of many resources: a collected change must not cost them all
    big = attempt(raw, "export-collect-big", 240,
                  lambda count, deadline: exports.export_collect(count, deadline, local_files), changes // 2)
    if not big:
        return [*rows, Row(f"4 export -> collect, collector of {local_files} files", None, "ms",
                           error=raw["export-collect-big"]["error"])]
    return [*rows, *(Row(f"4 export -> collect {p}, collector of {local_files} files", big[p], "ms",
                         f"collector of 1 file {p}", result[p]) for p in ("p50", "p90"))]


def memory_rows(raw: dict, count: int) -> list[Row]:
    name = f"memory-{count}"
    result = attempt(raw, name, 90 + count * 0.02, engine.node_memory, count)
    if not result:
        return [Row(f"5 peak RSS, {count} files", None, "MiB", error=raw[name]["error"])]
    graph, empty = result["graph"], result["empty"]
    return [
        Row(f"5 peak RSS supervisor, {count} files", graph.get("supervisor"), "MiB",
            "same node, empty graph", empty.get("supervisor")),
        Row(f"5 peak RSS engine, {count} files", graph.get("engine"), "MiB",
            "same node, empty graph", empty.get("engine")),
        Row(f"5 peak RSS etcd child, {count} files", graph.get("etcd"), "MiB",
            "same node, empty graph", empty.get("etcd")),
    ]


def kind_rows(raw: dict, packages: int, svc_rounds: int) -> list[Row]:
    rows = []
    result = attempt(raw, "pkg-check", 60, kinds.pkg_check, packages, 5)
    if result:
        rows += [
            Row(f"7 pkg: no-change check of {packages} installed packages", result["cold"], "ms",
                "dpkg-query -W of the same packages", result["dpkg_query"]),
            Row("7 pkg: the same, status file already parsed", result["warm"], "ms",
                "read /var/lib/dpkg/status once", result["read_status"]),
        ]
    else:
        rows.append(Row("7 pkg: no-change check", None, "ms", error=raw["pkg-check"]["error"]))
    result = attempt(raw, "svc-repair", 240 + svc_rounds * 2, kinds.svc_repair, svc_rounds)
    if result:
        rows += [
            Row(f"7 svc: drift repair p50 ({svc_rounds} systemctl stops)", result["repair"]["p50"], "ms",
                "StartUnit by hand p50", result["floor"]["p50"]),
            Row(f"7 svc: drift repair p99 ({svc_rounds} systemctl stops)", result["repair"]["p99"], "ms",
                "StartUnit by hand p99", result["floor"]["p99"]),
        ]
    else:
        rows.append(Row("7 svc: drift repair", None, "ms", error=raw["svc-repair"]["error"]))
    return rows


def scale_rows(raw: dict, sizes: tuple[int, ...], out: Path) -> list[Row]:
    """Figure 8 (only with --only scale: several minutes, N simulated hosts)."""
    limit = 240 + sum(sizes) * 0.6 + len(sizes) * (scale.WINDOW * 2 + scale.PROBES * 5 + 60)
    result = attempt(raw, "scale", limit, lambda deadline: scale.scale(list(sizes), deadline))
    if not result:
        return [Row("8 scale", None, "ms", error=raw["scale"]["error"])]
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    def seconds(ms):   # the table's "ms" rows hold seconds
        return ms / 1000 if ms is not None else None

    base = seconds(result["baseline"]["leader_round_ms"]["p50"])
    rows = []
    for size in result["sizes"].values():
        n = size["hosts"]
        rows += [
            Row(f"8 scale, {n} hosts: leader round p50", seconds(size["leader_round_ms"]["p50"]), "ms",
                "the same, no simulated host", base),
            Row(f"8 scale, {n} hosts: export -> all {n} collectors (max, one process)",
                size["export"]["median_of_max"], "ms"),
            Row(f"8 scale, {n} hosts: etcd requests per host and second at the real pace",
                size["real_pace"].get("requests_per_host_second_total"), "req"),
            Row(f"8 scale, {n} hosts: raft writes per export all collect",
                size["export_writes"]["collected_by_all"]["proposals_per_change"], "writes"),
        ]
    return rows


def versions() -> dict:
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except Exception:
            return "?"
    return {"python": platform.python_version(), "etcd": first_line(["etcd", "--version"]),
            "cpus": os.cpu_count(), "machine": platform.node(), "kernel": platform.release(),
            "puppet": first_line(["puppet", "--version"]) if shutil.which("puppet") else None}


def interrupt(*_) -> None:
    """SIGTERM unwinds like Ctrl-C, so every scenario's clean-up runs."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer samples (< 2 min)")
    parser.add_argument("--only", action="append", default=[],
                        choices=["formation", "repair", "engine", "export", "memory", "kinds", "scale"],
                        help="run only these figures (repeatable); scale runs only when named")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.* go")
    parser.add_argument("--big", action="store_true",
                        help=f"the engine figures at {BIG} files too (a growth-table row; "
                        "adds 10-30 minutes)")
    args = parser.parse_args()
    if not shutil.which("etcd") or not shutil.which("etcdctl"):
        say("etcd and etcdctl must be on PATH (make install, or apt-get install etcd-server etcd-client)")
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    # mgmtd as installed: its modules compiled once, not again at every process start
    # (a start that compiles them all costs 0.2 s of CPU, and noise in every figure)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    mode = "quick" if args.quick else "full"
    profile = dict(PROFILES[mode])
    if args.big:
        profile["sizes"] = (*profile["sizes"], BIG)
        profile["repeats"] = {**profile["repeats"], BIG: 1}
    common.KEEP_LOGS_IN = args.out / "logs"
    wanted = set(args.only) or {"formation", "repair", "engine", "export", "memory", "kinds"}
    raw: dict = {}
    rows: list[Row] = []
    sizes: dict[int, dict] = {}
    started = time.time()
    t0 = time.monotonic()
    run_foreign = ForeignCpu()
    interrupted = False
    try:
        if "formation" in wanted:
            rows += formation(raw, profile["formation_runs"])
        if "repair" in wanted:
            rows += repair(raw)
        # the latency figure before the engine's: 10,000s of files written and removed
        # leave this disk slow to create files for ~30 s (measured: p50 7-9 ms run
        # after them, 4-6 ms before); the table keeps its order
        export_part = export_rows(raw, profile["changes"], profile["collector_files"]) \
            if "export" in wanted else []
        if "engine" in wanted:
            engine_part, sizes = engine_rows(raw, profile)
            rows += engine_part
        rows += export_part
        if "memory" in wanted:
            rows += memory_rows(raw, profile["memory"])
        if "kinds" in wanted:
            rows += kind_rows(raw, profile["packages"], profile["svc_rounds"])
        if "scale" in wanted:
            rows += scale_rows(raw, profile["scale_hosts"], args.out)
    except KeyboardInterrupt:
        interrupted = True
        say("[bench] interrupted: writing what was measured so far")
    elapsed = time.monotonic() - t0

    title = f"mgmtd bench ({mode}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))})"
    others = run_foreign.share()
    print(f"\n{title}: {elapsed:.0f}s on {os.cpu_count()} CPUs; other processes used "
          f"{others:.0%} of the CPUs meanwhile\n")
    if others > 0.15:
        print("warning: the machine was busy with other work during the run: absolute figures "
              "are inflated and noisy (ratios less so); see foreign_cpu per scenario in "
              "latest.json\n")
    print(report.main_table(rows))
    if sizes:
        print("\n6 growth (engine alone; wall times net of startup and the converged timeout, "
              "CPU net of an empty run's; floor = python loop, cold)\n")
        print(report.growth_table(sizes))
    if sizes and not shutil.which("puppet"):
        print(f"\nnote: {puppet.PUPPET_HINT}")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"mode": mode, "started": started, "elapsed_seconds": elapsed, "versions": versions(),
            "foreign_cpu": others,
            "converged_timeout": engine.CONVERGED_TIMEOUT, "grace_period": GRACE}
    report.write_json(args.out / "latest.json", meta, rows, raw)
    written = [str(args.out / "latest.json")]
    try:
        report.write_svg(args.out / "latest.svg", rows, title)
        written.append(str(args.out / "latest.svg"))
        if report.write_png(args.out / "latest.png", rows, title):
            written.append(str(args.out / "latest.png"))
        else:
            print("note: latest.png skipped (matplotlib is not installed: "
                  f"`{sys.executable} -m pip install matplotlib` adds it); the chart is latest.svg")
    except Exception as err:  # a chart must never cost the results
        print(f"note: no chart: {type(err).__name__}: {err}")
    print("wrote " + ", ".join(written))
    failed = [k for k, v in raw.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)} (details in latest.json)")
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
