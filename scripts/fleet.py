"""``make fleet``: N real machines running mgmtd as a systemd service, until Ctrl-C.

Each machine is systemd booted as PID 1 in fresh namespaces (tests/system/):
its own disk (an overlay of this host's /, under .run/fleet/), /tmp, /run,
network (10.213.0.0/24 on a bridge that exists only inside this demo) and
journal. mgmtd is installed once by `make install-service`; each machine gets
/etc/default/mgmtd as docs/operations.md writes it, then `systemctl enable --now
mgmtd`. Once the cluster is at its ideal size the member table is printed with
the commands to look inside a machine; Ctrl-C powers every machine off. Needs
root (namespaces, mounts)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.system import image as images  # noqa: E402 (after the path above)
from tests.system.fleet import Fleet  # noqa: E402
from tests.system.namespaces import unsupported_reason  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("NODES", "3")),
                        help="machines to boot (default: $NODES or 3)")
    parser.add_argument("--ideal", type=int, default=int(os.environ.get("IDEAL", "3")),
                        help="--ideal-cluster-size of the first node (default: $IDEAL or 3)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the ideal size (default: %(default)s)")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="power off once the table is printed (a check of the demo itself)")
    args = parser.parse_args()
    reason = unsupported_reason()
    if reason:
        print(f"make fleet: {reason}", file=sys.stderr)
        return 2
    if not 1 <= args.nodes <= 20:
        print("make fleet: NODES must be 1..20", file=sys.stderr)
        return 2
    directory = ROOT / ".run" / "fleet"
    shutil.rmtree(directory, ignore_errors=True)  # a fresh fleet every time
    directory.mkdir(parents=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    started = time.monotonic()
    print("building the image: make install-service into a layer the machines share ...", flush=True)
    try:
        image = images.build()  # on Ctrl-C it removes what it built
    except KeyboardInterrupt:
        return 130
    except images.ImageError as err:
        print(f"make fleet: {err}", file=sys.stderr)
        return 1
    print(f"  mgmtd {image.version} installed ({time.monotonic() - started:.0f} s)", flush=True)
    try:
        fleet = Fleet(directory, image, args.nodes, ideal=min(args.ideal, args.nodes), flags=())
    except BaseException:
        images.remove(image)
        raise
    try:
        for machine in fleet.machines:
            fleet.configure(machine)
            machine.boot()
            print(f"booted {machine.name} at {machine.address} (init pid {machine.init_pid})", flush=True)
        for machine in fleet.machines:
            print(f"{machine.name}: systemctl enable --now mgmtd", flush=True)
            fleet.enable([machine])
        size = min(args.ideal, args.nodes)
        print(f"waiting for {size} voters ...", flush=True)
        fleet.wait_settled(size, timeout=args.timeout)
        first = fleet[0]
        print(first.run("mgmtctl", "members", check=True).stdout, flush=True)
        print(f"ready in {time.monotonic() - started:.0f} s. Inside a machine (as root):")
        print(f"  nsenter -t {first.init_pid} -a journalctl -u mgmtd -f       # follow {first.name}'s log")
        print(f"  nsenter -t {first.init_pid} -a systemctl status mgmtd")
        print(f"  nsenter -t {first.init_pid} -a mgmtctl status")
        print(f"  nsenter -t {first.init_pid} -a bash                           # a shell on {first.name}")
        for machine in fleet.machines[1:]:
            print(f"  {machine.name}: nsenter -t {machine.init_pid} -a ...")
        print("Ctrl-C powers every machine off.", flush=True)
        if not args.exit_when_ready:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\npowering off ...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the power-off halfway
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            fleet.close(clean=True)
        finally:
            images.remove(image)
    print("all machines are off.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
