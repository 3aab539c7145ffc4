"""``make demo``: N local mgmtd nodes on 127.0.0.1..N, one cluster, until Ctrl-C.

Each node gets its own loopback address, prefix (under .run/demo/) and log;
the first bootstraps, the others join with --seeds. Once the cluster is at its
ideal size the member table is printed; Ctrl-C stops every node in order.
With --tls (TLS=1 make demo) the nodes get certificates of a fresh CA and etcd
auth is on: each node may write only its own keys (docs/security.md)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("NODES", "3")))
    parser.add_argument("--ideal", type=int, default=int(os.environ.get("IDEAL", "3")))
    parser.add_argument("--client-port", type=int, default=12379)
    parser.add_argument("--peer-port", type=int, default=12380)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--exit-when-ready", action="store_true", help="stop once the table is printed")
    parser.add_argument("--tls", action="store_true", default=os.environ.get("TLS", "") not in ("", "0"),
                        help="mutual TLS and etcd auth, with certificates of a fresh CA (or TLS=1)")
    args = parser.parse_args()
    base = ROOT / ".run" / "demo"
    shutil.rmtree(base, ignore_errors=True)  # a fresh cluster every time
    base.mkdir(parents=True)
    nodes: list[subprocess.Popen] = []
    scheme = "https" if args.tls else "http"
    urls = [f"{scheme}://127.0.0.{i}:{args.client_port}" for i in range(1, args.nodes + 1)]
    pki = base / "pki"

    def tls_args(name: str) -> list[str]:
        if not args.tls:
            return []
        return ["--tls-ca", str(pki / "ca.crt"), "--tls-cert", str(pki / f"{name}.crt"),
                "--tls-key", str(pki / f"{name}.key")]

    if args.tls:
        subprocess.run([str(BIN / "mgmtd"), "certs", "init", "--dir", str(pki)], check=True,
                       stdout=subprocess.DEVNULL)
        for i in range(1, args.nodes + 1):
            subprocess.run([str(BIN / "mgmtd"), "certs", "issue", f"demo{i}", "--dir", str(pki),
                            "--address", f"127.0.0.{i}"], check=True, stdout=subprocess.DEVNULL)
        print(f"certificates of a fresh CA in {pki}", flush=True)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for i in range(1, args.nodes + 1):
            name = f"demo{i}"
            cmd = [str(BIN / "mgmtd"), "run", "--hostname", name, "--prefix", str(base / name),
                   "--client-urls", urls[i - 1],
                   "--server-urls", f"{scheme}://127.0.0.{i}:{args.peer_port}", *tls_args(name)]
            cmd += ["--ideal-cluster-size", str(args.ideal)] if i == 1 else ["--seeds", urls[0]]
            cmd += ["empty"]
            log = open(base / f"{name}.log", "ab")
            nodes.append(subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True))
            log.close()
            print(f"started {name} on 127.0.0.{i} (log: {base / name}.log)", flush=True)
        deadline = time.monotonic() + args.timeout
        ctl = [str(BIN / "mgmtctl"), "--endpoints", ",".join(urls), *tls_args("demo1")]
        want = min(args.ideal, args.nodes)
        while not stopping:
            out = subprocess.run([*ctl, "members", "-o", "json"], capture_output=True, text=True)
            if out.returncode == 0:
                view = json.loads(out.stdout)
                healthy = [n for n in view["nodes"]
                           if n["role"] in ("leader", "voter") and n["health"] == "healthy"]
                if len(healthy) == want:
                    break
            if time.monotonic() > deadline:
                print(f"the cluster did not reach {want} voters in {args.timeout:.0f}s; see the logs",
                      file=sys.stderr)
                return 1
            time.sleep(0.5)
        if stopping:
            return 130
        print(subprocess.run([*ctl, "members"], capture_output=True, text=True).stdout)
        if args.exit_when_ready:
            return 0
        print(f"try: {ctl[0]} --endpoints {urls[0]} {' '.join(tls_args('demo1'))} status"
              "    (Ctrl-C stops the demo)", flush=True)
        while not stopping:
            time.sleep(0.2)
        return 0
    finally:
        print("stopping the nodes...", flush=True)
        for proc in nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
