"""``msg``: logs a message once per engine run, and again each time it is
refreshed over a ``notify`` edge (mgmt's msg); with ``journal: true`` also
sends it to systemd's journal as an entry of its own, with ``fields``, and
with ``syslog: true`` to syslog."""

from __future__ import annotations

import logging
import re
import syslog
from typing import Any

from mgmtd import log
from mgmtd.resources import journal
from mgmtd.resources.base import (
    Field,
    FieldError,
    Meta,
    Resource,
    ResourceError,
    is_finite_number,
    shown,
)

LOG = log.get("msg")

# mgmt's journal priorities, and Python's level names, to logging levels
PRIORITIES = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "critical": logging.CRITICAL, "err": logging.ERROR, "error": logging.ERROR,
    "warning": logging.WARNING, "warn": logging.WARNING, "notice": logging.INFO,
    "info": logging.INFO, "debug": logging.DEBUG,
}
FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
# syslog(3) priorities by mgmt's names (Python's level names map through PRIORITIES)
SYSLOG_PRIORITY = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
                   "info": 6, "debug": 7}
LEVEL_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                  logging.DEBUG: 7}


class MsgResource(Resource):
    kind = "msg"
    FIELDS = {
        "body": Field((str,), "", doc="the message"),
        "priority": Field((str,), None, doc="Emerg, Alert, Crit, Err, Warning, Notice, Info (default) or "
                          "Debug (case does not matter; Python's level names work too)"),
        "fields": Field((dict,), None, doc="KEY: value pairs appended to the logged line"),
        "journal": Field((bool,), False, doc="also send the message to systemd's journal as an entry "
                         "of its own, with fields as journal fields (their names then upper case)"),
        "syslog": Field((bool,), False, doc="also send the message to syslog (/dev/log), as mgmtd, "
                        "facility daemon"),
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._logged = False
        self._sent = False  # to the journal and syslog, as asked

    @property
    def level(self) -> int:
        return PRIORITIES.get((self.priority or "info").lower(), logging.INFO)

    def validate(self) -> None:
        if self.priority and self.priority.lower() not in PRIORITIES:
            raise FieldError("priority", f"unknown priority {shown(self.priority)} (expected one of: Emerg, "
                             "Alert, Crit, Err, Warning, Notice, Info, Debug)")
        for key, value in (self.fields or {}).items():
            if not isinstance(key, str) or not FIELD_NAME.match(key):
                raise FieldError("fields", f"field name {shown(key)} must be letters, digits and '_', "
                                 "not starting with '_'")
            if self.journal and not journal.FIELD_NAME.match(key):
                raise FieldError("fields", f"field name {shown(key)}: journal fields are upper case "
                                 "letters, digits and '_' (journal: true)")
            if not (isinstance(value, str) or is_finite_number(value)):
                raise FieldError("fields", f"field {shown(key)} must be a string (or a finite number), "
                                 f"not {shown(value)}")

    @property
    def syslog_priority(self) -> int:
        name = (self.priority or "info").lower()
        return SYSLOG_PRIORITY.get(name, LEVEL_PRIORITY.get(self.level, 6))

    def journal_fields(self) -> dict[str, str]:
        fields = {key: str(value) for key, value in (self.fields or {}).items()}
        fields.update(MESSAGE=self.body, PRIORITY=str(self.syslog_priority),
                      SYSLOG_IDENTIFIER="mgmtd", MGMTD_RESOURCE=str(self))
        return fields

    def message(self) -> str:
        extra = " ".join(f"{key}={value}" for key, value in sorted((self.fields or {}).items()))
        return f"{self.body} ({extra})" if extra else self.body

    def check_apply(self, apply: bool) -> bool:
        if self.refresh:
            self._logged = self._sent = False
        if self._logged and self._sent:
            return True
        if not apply:
            self.ctx.report("info", f"{self}: would log: {self.message()}")
            return False
        if not self._logged:
            LOG.log(self.level, "%s: %s", self, self.message())
            self._logged = True
        if self.journal:
            try:
                journal.send(self.journal_fields())
            except journal.JournalError as err:
                raise ResourceError(str(err)) from None
        if self.syslog:
            syslog.openlog("mgmtd", 0, syslog.LOG_DAEMON)
            syslog.syslog(self.syslog_priority, self.message())
        self._sent = True
        return False
