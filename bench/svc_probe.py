"""Runs inside a machine (with mgmtd's own Python, which has jeepney): stops a
unit over D-Bus ``rounds`` times and reports, for each round, the time from
the unit becoming inactive to it being active again, read from systemd's own
PropertiesChanged signals.

    svc_probe.py UNIT ROUNDS repair   # someone else (mgmtd) starts it again
    svc_probe.py UNIT ROUNDS start    # the probe starts it itself: the floor

Prints one JSON list of seconds."""

from __future__ import annotations

import json
import sys
import time

from jeepney import DBusAddress, MatchRule, Properties, message_bus, new_method_call
from jeepney.io.blocking import open_dbus_connection

SYSTEMD = "org.freedesktop.systemd1"
MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name=SYSTEMD,
                      interface="org.freedesktop.systemd1.Manager")
ROUND_TIMEOUT = 30.0


def main() -> int:
    unit, rounds, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = open_dbus_connection(bus="SYSTEM")
    path = conn.send_and_get_reply(new_method_call(MANAGER, "LoadUnit", "s", (unit,))).body[0]
    rule = MatchRule(type="signal", interface="org.freedesktop.DBus.Properties",
                     member="PropertiesChanged", path=path)
    conn.send_and_get_reply(message_bus.AddMatch(rule))
    queue = conn.filter(rule, bufsize=10000).queue
    unit_address = DBusAddress(path, bus_name=SYSTEMD, interface="org.freedesktop.systemd1.Unit")

    def state() -> str:
        return conn.send_and_get_reply(Properties(unit_address).get("ActiveState")).body[0][1]

    def wait_state(wanted: str) -> float:
        deadline = time.monotonic() + ROUND_TIMEOUT
        while True:
            message = conn.recv_until_filtered(queue, timeout=max(0.0, deadline - time.monotonic()))
            interface, changed, _ = message.body
            if interface == "org.freedesktop.systemd1.Unit" and "ActiveState" in changed:
                if changed["ActiveState"][1] == wanted:
                    return time.monotonic()

    samples = []
    for _ in range(rounds):
        if state() != "active":
            raise SystemExit(f"{unit} is not active before a round")
        queue.clear()
        conn.send_and_get_reply(new_method_call(MANAGER, "StopUnit", "ss", (unit, "replace")))
        stopped = wait_state("inactive")
        if mode == "start":
            conn.send_and_get_reply(new_method_call(MANAGER, "StartUnit", "ss", (unit, "replace")))
        samples.append(wait_state("active") - stopped)
        time.sleep(0.05)  # let the repairer see the unit settle before the next stop
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
