"""Which of mgmt's own examples mgmtd takes, and which of those that configure
a machine (pkg, svc, user, group, hostname) run, unchanged, in a real machine.

    .venv/bin/python scripts/mgmt_examples.py MGMT_CHECKOUT/examples/yaml

Every example is validated (`mgmtd validate`). The examples using the machine
kinds then run with `mgmtd run --converged-timeout 1` in one machine
(tests/system: systemd as PID 1 in namespaces, its own disk; needs root), a fresh
one per example, whose
only apt repository offers small packages with the names the examples use
(powertop, sl, cowsay, drbd-utils, httpd) and which has the units they name
(purpleidea, system and user; drbd from the drbd-utils package). Nothing on
this host changes. Prints one line per example and the totals."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.system import image as images  # noqa: E402 (after the path above)
from tests.system.debrepo import Repo, apt_update, isolate_apt  # noqa: E402
from tests.system.fleet import Fleet  # noqa: E402
from tests.system.kinds import Sandbox  # noqa: E402
from tests.system.namespaces import unsupported_reason  # noqa: E402

MACHINE_KINDS = ("pkg", "svc", "user", "group", "hostname")
MGMTD = str(Path(sys.executable).with_name("mgmtd"))
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy={target}\n"
PACKAGES = {
    "powertop": {}, "sl": {}, "cowsay": {},
    "httpd": {"/usr/bin/apachectl": ("#!/bin/sh\necho 'httpd (a stand-in) is running'\n", 0o755)},
    "drbd-utils": {"/lib/systemd/system/drbd.service": (SLEEPER.format(target="multi-user.target"), 0o644),
                   "/etc/drbd.d/": ("", 0o755)},
}


def validate(path: Path) -> str:
    """'' when mgmtd takes the graph, else its one-line error."""
    done = subprocess.run([MGMTD, "validate", str(path)], capture_output=True, text=True, timeout=60)
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def uses_machine_kinds(path: Path) -> bool:
    text = path.read_text()
    return any(f"\n  {kind}:" in text for kind in MACHINE_KINDS)


def prepare(box: Sandbox, scratch: Path) -> None:
    isolate_apt(box)
    repo = Repo(box, scratch / "repo", name="mgmt-examples")
    for name, files in PACKAGES.items():
        repo.publish(name, "1.0-1", files=files)
    repo.enable()
    apt_update(box)
    box.write("/etc/systemd/system/purpleidea.service", SLEEPER.format(target="multi-user.target"))
    box.write("/etc/systemd/user/purpleidea.service", SLEEPER.format(target="default.target"))
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "user@0.service", timeout=120)
    # what the examples take for granted: apache installed (autoedges5 only checks it,
    # noop), the directory of svc1's file (mgmt does not create it either)
    box.run("apt-get", "install", "-y", "-q", "httpd", timeout=120)
    box.run("mkdir", "-p", "/tmp/mgmt")


def run_in_machine(path: Path, image: images.Image, scratch: Path) -> str:
    """Runs one example in a fresh machine: '' when it converged, else why not."""
    fleet = Fleet(scratch / "fleet", image, 1)
    try:
        fleet[0].boot()
        box = Sandbox(fleet[0])
        prepare(box, scratch)
        done = box.apply(path.read_text())
        errors = [line for line in done.log.splitlines() if "ERROR" in line]
        return "" if done.returncode == 0 else (errors or [f"exit {done.returncode}"])[0]
    finally:
        fleet.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, help="mgmt's examples/yaml directory")
    parser.add_argument("--validate-only", action="store_true", help="do not boot a machine")
    args = parser.parse_args()
    files = sorted(args.examples.glob("*.yaml"))
    if not files:
        print(f"no *.yaml in {args.examples}", file=sys.stderr)
        return 2
    refused = {path.name: validate(path) for path in files}
    to_run = [path for path in files if not refused[path.name] and uses_machine_kinds(path)]
    ran: dict[str, str] = {}
    if to_run and not args.validate_only:
        reason = unsupported_reason()
        if reason:
            print(f"cannot boot a machine here ({reason}): validating only", file=sys.stderr)
        else:
            image = images.build()
            scratch = Path(tempfile.mkdtemp(prefix="mgmtd-mgmt-examples-"))
            try:
                for path in to_run:
                    ran[path.name] = run_in_machine(path, image, scratch / path.stem)
            finally:
                images.remove(image)
                shutil.rmtree(scratch, ignore_errors=True)
    for path in files:
        name = path.name
        if refused[name]:
            print(f"refused   {name}: {refused[name]}")
        elif name in ran:
            print(f"{'ran' if not ran[name] else 'FAILED':9} {name}{': ' + ran[name] if ran[name] else ''}")
        else:
            print(f"valid     {name}")
    valid = sum(1 for name in refused if not refused[name])
    print(f"\n{valid} of {len(files)} taken by mgmtd; of the {len(ran)} run in a machine, "
          f"{sum(1 for error in ran.values() if not error)} converged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
