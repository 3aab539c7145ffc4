"""``msg``: logs a message once per engine run, and again each time it is
refreshed over a ``notify`` edge (mgmt's msg)."""

from __future__ import annotations

import logging
import re
from typing import Any

from mgmtd import log
from mgmtd.resources.base import Field, FieldError, Meta, Resource, is_finite_number, shown

LOG = log.get("msg")

# mgmt's journal priorities, and Python's level names, to logging levels
PRIORITIES = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "critical": logging.CRITICAL, "err": logging.ERROR, "error": logging.ERROR,
    "warning": logging.WARNING, "warn": logging.WARNING, "notice": logging.INFO,
    "info": logging.INFO, "debug": logging.DEBUG,
}
FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


class MsgResource(Resource):
    kind = "msg"
    FIELDS = {
        "body": Field((str,), "", doc="the message"),
        "priority": Field((str,), None, doc="Emerg, Alert, Crit, Err, Warning, Notice, Info (default) or "
                          "Debug (case does not matter; Python's level names work too)"),
        "fields": Field((dict,), None, doc="KEY: value pairs appended to the logged line"),
        "journal": Field((bool,), None, doc="(mgmt compatibility, ignored) the line goes to mgmtd's log, "
                         "which is the journal when mgmtd runs under systemd"),
        "syslog": Field((bool,), None, doc="(mgmt compatibility, ignored) like journal"),
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._logged = False

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
            if not (isinstance(value, str) or is_finite_number(value)):
                raise FieldError("fields", f"field {shown(key)} must be a string (or a finite number), "
                                 f"not {shown(value)}")

    def message(self) -> str:
        extra = " ".join(f"{key}={value}" for key, value in sorted((self.fields or {}).items()))
        return f"{self.body} ({extra})" if extra else self.body

    def check_apply(self, apply: bool) -> bool:
        if self.refresh:
            self._logged = False
        if self._logged:
            return True
        if not apply:
            self.ctx.report("info", f"{self}: would log: {self.message()}")
            return False
        LOG.log(self.level, "%s: %s", self, self.message())
        self._logged = True
        return False
