"""For every test: mgmtd's default state directory (``--prefix`` when not
given, from systemd's $STATE_DIRECTORY) is a directory of the test's own, so
an engine started without --prefix keeps its graph cache and check memos
there, never in the machine's /var/lib/mgmtd, nor in another test's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_state_directory(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))
