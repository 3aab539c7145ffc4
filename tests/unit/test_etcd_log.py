"""etcd's zap JSON lines are re-logged at their own level, known noise lower."""

from __future__ import annotations

import json
import logging

from mgmtd.supervisor.etcd_process import relog


def levels(caplog, *entries: dict) -> list[tuple[int, str]]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mgmtd.etcd"):
        for entry in entries:
            relog(json.dumps(entry))
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_etcd_levels_are_kept_and_known_noise_lowered(caplog):
    got = levels(caplog, {"level": "warn", "msg": "slow fdatasync", "took": "1s"},
                 {"level": "error", "msg": "failed to publish"},
                 {"level": "warn", "msg": "simple token is not cryptographically signed"},
                 {"level": "warn", "msg": "cannot find a user for permission check", "user-name": "h9"})
    assert got == [(logging.WARNING, "slow fdatasync (took=1s)"), (logging.ERROR, "failed to publish"),
                   (logging.DEBUG, "simple token is not cryptographically signed"),
                   (logging.INFO, "cannot find a user for permission check (user-name=h9)")]


def test_a_refused_certificate_stays_a_warning_a_hang_up_does_not(caplog):
    got = levels(caplog, {"level": "warn", "msg": "rejected connection", "error": "EOF"},
                 {"level": "warn", "msg": "rejected connection",
                  "error": "remote error: tls: bad certificate"})
    assert [level for level, _ in got] == [logging.DEBUG, logging.WARNING]
    assert "bad certificate" in got[1][1]
