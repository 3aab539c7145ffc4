"""The engine's malloc tuning (issue 19): on glibc both calls reach the C
library; elsewhere they are no-ops, never errors."""

from __future__ import annotations

import platform

import pytest

from mgmtd.engine import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_arena_limit_and_the_trim():
    assert memory._glibc() is not None
    assert memory.limit_arenas() is True
    memory.give_back()


def test_without_glibc_nothing_happens(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.limit_arenas() is False
    memory.give_back()
