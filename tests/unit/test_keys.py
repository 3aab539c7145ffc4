"""Values read from etcd keys: bad data is None, never an exception (issue 13:
bad or missing data must never crash a round or cause a membership change)."""

from __future__ import annotations

import pytest

from mgmtd.cluster.keys import json_object


@pytest.mark.parametrize("raw", [None, b"", b"banana", b"[1, 2]", b'"text"', b"5", b"\xff\xfe",
                                 b"[" * 100000 + b"]" * 100000])
def test_anything_but_a_json_object_is_none(raw):
    assert json_object(raw) is None


def test_an_object_is_returned():
    assert json_object(b'{"peer_urls": ["http://127.0.0.1:2380"]}') == {"peer_urls": ["http://127.0.0.1:2380"]}
