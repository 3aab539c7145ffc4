"""The optional puppet reference of figure 3: ``puppet apply`` of an equivalent
manifest (a directory and N files with content), cold and no-change, each
repeat paired with an empty manifest's run right before it.

Two figures per pass, side by side: the **whole process** (what an operator
waits for) and the **net** time (minus the empty manifest's start-up, which is
most of puppet's time at small N). A net time at or under zero says that the
work drowned in the start-up's jitter: it is shown as the spread of the
samples, never as a negative number. Puppet is never installed by the bench;
``figures`` takes the command, so it runs (in the tests) without puppet."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Deadline, Workspace, median
from bench.report import Row

PUPPET_HINT = "puppet not on PATH: `apt-get install puppet-agent` (Debian) adds this column"


def command() -> list[str] | None:
    found = shutil.which("puppet")
    return [found] if found else None


def manifest_text(directory: Path | None, wanted: dict[str, str]) -> str:
    body = []
    if directory is not None:
        body.append(f"file {{ '{directory}': ensure => directory }}")
        for path, content in wanted.items():
            body.append(f"file {{ '{path}': ensure => file, content => {json.dumps(content)}, "
                        f"require => File['{directory}'] }}")
    return "\n".join(body) + "\n"


def apply(cmd: list[str], ws: Workspace, manifest: Path, deadline: Deadline) -> float:
    """One ``puppet apply``: its wall time, start to exit."""
    state = ws.path("puppet-state")
    args = [*cmd, "apply", "--detailed-exitcodes", "--logdest", "console",
            "--confdir", str(state / "conf"), "--vardir", str(state / "var"),
            "--codedir", str(state / "code"), "--log_level", "warning", str(manifest)]
    t0 = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=max(1, deadline.left()))
    wall = time.monotonic() - t0
    if out.returncode not in (0, 2):  # 2 = changes applied
        raise RuntimeError(f"puppet apply exited {out.returncode}: {out.stderr[-1000:]}")
    return wall


def figures(ws: Workspace, wanted: dict[str, str], repeats: int, deadline: Deadline,
            cmd: list[str] | None = None) -> dict:
    """``repeats`` rounds of (empty, cold, no-change) on fresh directories:
    every sample, and the medians of the whole-process and net times."""
    cmd = cmd if cmd is not None else command()
    if cmd is None:
        return {"puppet_error": PUPPET_HINT}
    empty = ws.path("puppet-empty.pp")
    empty.write_text(manifest_text(None, {}))
    runs: dict[str, list[float]] = {"empty": [], "cold": [], "nochange": []}
    try:
        for k in range(repeats):
            directory = ws.path(f"puppet-out-{k}")
            manifest = ws.path(f"puppet-{k}.pp")
            manifest.write_text(manifest_text(
                directory, {str(directory / Path(p).name): c for p, c in wanted.items()}))
            runs["empty"].append(apply(cmd, ws, empty, deadline))
            runs["cold"].append(apply(cmd, ws, manifest, deadline))
            runs["nochange"].append(apply(cmd, ws, manifest, deadline))
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
        return {"puppet_error": str(err), "puppet_runs": runs}
    out: dict = {"puppet_runs": runs}
    for kind in ("cold", "nochange"):
        out[f"puppet_{kind}"] = median([w - e for w, e in zip(runs[kind], runs["empty"], strict=True)])
        out[f"puppet_{kind}_whole"] = median(runs[kind])
    return out


# --- the rows (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Net:
    """A net time (median of the paired differences, whole run minus start-up)
    and how the table shows it."""
    value: float | None       # None: at or under zero, lost in the start-up's jitter
    shown: str                # "" when value is shown as a number; else the spread

    @classmethod
    def of(cls, whole: list[float], startup: list[float]) -> Net:
        net = median([w - s for w, s in zip(whole, startup, strict=True)])
        if net is not None and net > 0:
            return cls(net, "")
        if not whole or not startup:
            return cls(None, "-")
        return cls(None, f"noise: runs {spread(whole)}, start-up {spread(startup)}")


def spread(values: list[float]) -> str:
    """min..max of samples in seconds, e.g. ``1.52..1.70 s``."""
    return f"{min(values):.2f}..{max(values):.2f} s"


def rows(count: int, result: dict) -> list[Row]:
    """The puppet rows of one size: net (or the spread) and whole process, for
    the cold and the no-change pass, mgmtd's figure beside each. mgmtd's whole
    process is its run minus only the converged timeout it is told to wait."""
    runs = result.get("puppet_runs")
    if "puppet_error" in result or not runs:
        return []
    engine = result["runs"]
    out = []
    labels = {"cold": "cold converge", "nochange": "no-change pass"}
    for kind, label in labels.items():
        net = Net.of(runs[kind], runs["empty"])
        out.append(Row(f"3 engine, {count} files: {label}", result[kind], "s",
                       "puppet apply, net of its start-up", net.value, ref_text=net.shown))
        mgmtd_whole = median([n + s for n, s in zip(engine[kind], engine["startup"], strict=False)])
        out.append(Row(f"3 engine, {count} files: {label}, whole process", mgmtd_whole, "s",
                       "puppet apply, whole process", median(runs[kind])))
    return out
