"""msg's ``journal: true`` and ``syslog: true`` in a machine with a real
journald: the entry is in the journal with its own fields and priority, and
the syslog line comes through /dev/log."""

from __future__ import annotations

import json
import textwrap

from tests.harness import wait_for

GRAPH = textwrap.dedent("""\
    graph: messages
    resources:
      msg:
      - name: disk
        body: "disk sda is filling up"
        priority: Warning
        journal: true
        fields:
          DISK: sda
          PERCENT: 91
      - name: legacy
        body: "the old way"
        priority: Notice
        syslog: true
    """)


def journal(sandbox, *match: str) -> list[dict]:
    out = sandbox.run("journalctl", "--no-pager", "-o", "json", *match, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_msg_reaches_the_journal_with_its_fields_and_syslog(sandbox):
    done = sandbox.apply(GRAPH)
    assert done.returncode == 0, done.log
    entries = wait_for(lambda: journal(sandbox, "MGMTD_RESOURCE=msg[disk]"), timeout=30,
                       what="the journal entry of msg[disk]")
    assert len(entries) == 1, entries
    entry = entries[0]
    assert (entry["MESSAGE"], entry["PRIORITY"], entry["DISK"], entry["PERCENT"]) == (
        "disk sda is filling up", "4", "sda", "91")
    assert entry["SYSLOG_IDENTIFIER"] == "mgmtd"
    logged = wait_for(lambda: journal(sandbox, "_TRANSPORT=syslog", "SYSLOG_IDENTIFIER=mgmtd",
                                              "SYSLOG_FACILITY=3"),
                      timeout=30, what="the syslog line of msg[legacy]")
    assert [(e["MESSAGE"], e["PRIORITY"]) for e in logged] == [("the old way", "5")]
