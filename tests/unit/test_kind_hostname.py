"""hostname without changing this host: name rules, mgmt's fallbacks, the
/etc/hostname and /etc/machine-info formats, and check_apply on files under
tmp_path (sethostname replaced) when hostnamed cannot be reached, or a fake
hostnamed when it can."""

from __future__ import annotations

import pytest

from mgmtd.resources import hostname as mod
from mgmtd.resources.base import Context, ResourceError
from mgmtd.resources.dbus import BusError
from mgmtd.resources.hostname import (
    HostnameResource,
    env_quote,
    env_value,
    hostname_problem,
    static_from,
    with_env,
)
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text
from tests.unit.test_kinds import Reports


@pytest.mark.parametrize("name,ok", [
    ("web1", True), ("web-1.example.com", True), ("a" * 64, True),
    ("a" * 65, False), ("web 1", False), ("web_1", False), (".web", False), ("web.", False),
    ("a..b", False), ("Hostname Watcher @ TestHost", False),
])
def test_hostname_rule(name, ok):
    assert (hostname_problem(name) == "") is ok


def test_static_from_skips_comments_and_blank_lines():
    assert static_from("# set by hand\n\n  web1  \nother\n") == "web1"
    assert static_from("") == ""


def test_machine_info_round_trip_keeps_other_lines():
    text = 'ICON_NAME=computer\nPRETTY_HOSTNAME=old\n# comment\n'
    new = with_env(text, "PRETTY_HOSTNAME", 'Web "One" $x `y` \\z')
    assert new.splitlines()[0] == "ICON_NAME=computer"
    assert new.splitlines()[2] == "# comment"
    assert env_value(new, "PRETTY_HOSTNAME") == 'Web "One" $x `y` \\z'
    assert env_value(new, "ICON_NAME") == "computer"
    assert env_value(with_env("", "PRETTY_HOSTNAME", "A B"), "PRETTY_HOSTNAME") == "A B"
    assert env_quote('a"b') == '"a\\"b"'
    assert env_value("X=1\n", "PRETTY_HOSTNAME") == ""
    assert env_value("P='a \\\\ \"b'\n", "P") == 'a \\\\ "b'
    assert env_value("P=a\\ b\n", "P") == "a b"


def make(name="h", **params) -> tuple[HostnameResource, Reports]:
    res = HostnameResource(name, params)
    res.validate()
    reports = Reports()
    res.ctx = Context(report=reports)
    return res, reports


def test_mgmt_fallbacks():
    res, _ = make("Hostname Watcher @ TestHost", hostname="test.hostname.example.com")
    assert {res.wanted(f) for f in ("pretty_hostname", "static_hostname", "transient_hostname")} == \
        {"test.hostname.example.com"}
    res, _ = make("web1")
    assert res.wanted("static_hostname") == "web1"        # no hostname: the name
    res, _ = make("web1", hostname="web2", pretty_hostname="", static_hostname="web3")
    assert res.wanted("pretty_hostname") == ""            # '' = not managed
    assert res.wanted("static_hostname") == "web3"
    assert res.wanted("transient_hostname") == "web2"


def test_invalid_names_are_located():
    with pytest.raises(GraphError) as err:
        load_text("graph: g\nresources:\n  hostname:\n  - name: Hostname Watcher @ TestHost\n")
    assert "<graph>:4:" in str(err.value) and "not a valid hostname" in str(err.value)
    with pytest.raises(GraphError, match="static hostname"):
        load_text("graph: g\nresources:\n  hostname:\n  - name: x\n    static_hostname: a_b\n")
    # a pretty name is free-form; only its static and transient names must be hostnames
    load_text("graph: g\nresources:\n  hostname:\n  - name: x\n    hostname: web1\n"
              "    pretty_hostname: Web One\n")


class Host:
    """The files under tmp_path and a kernel hostname in a variable."""

    def __init__(self, tmp_path, monkeypatch) -> None:
        self.etc_hostname = tmp_path / "hostname"
        self.machine_info = tmp_path / "machine-info"
        self.kernel = "old-kernel"
        monkeypatch.setattr(mod, "ETC_HOSTNAME", str(self.etc_hostname))
        monkeypatch.setattr(mod, "MACHINE_INFO", str(self.machine_info))
        monkeypatch.setattr(mod.socket, "gethostname", lambda: self.kernel)
        monkeypatch.setattr(mod.socket, "sethostname", self._set)

    def _set(self, name: str) -> None:
        self.kernel = name


def no_bus(res: HostnameResource) -> None:
    def refuse():
        raise BusError("cannot connect to the D-Bus /run/dbus/system_bus_socket: No such file or directory")
    res.hold.get = refuse


def test_without_hostnamed_files_and_kernel(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch)
    host.machine_info.write_text("ICON_NAME=computer\n")
    res, reports = make("x", pretty_hostname="Web One", static_hostname="web1", transient_hostname="web1-now")
    no_bus(res)
    assert res.check_apply(False) is False
    assert "would set the static hostname to 'web1' (now '')" in reports.text()
    assert "would set the pretty hostname to 'Web One'" in reports.text()
    assert not host.etc_hostname.exists() and host.kernel == "old-kernel"
    assert res.check_apply(True) is False
    assert host.etc_hostname.read_text() == "web1\n"
    assert host.machine_info.read_text() == 'ICON_NAME=computer\nPRETTY_HOSTNAME="Web One"\n'
    assert host.kernel == "web1-now"
    assert res.check_apply(True) is True
    assert reports.text().count("hostnamed not available") == 1     # said once, not at every check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostname", "machine-info"]   # no temp files


def test_unmanaged_names_are_left_alone(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch)
    res, _ = make("x", hostname="web1", pretty_hostname="", transient_hostname="")
    no_bus(res)
    assert res.check_apply(True) is False
    assert host.etc_hostname.read_text() == "web1\n"
    assert not host.machine_info.exists()
    assert host.kernel == "old-kernel"


def test_a_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    Host(tmp_path, monkeypatch)
    monkeypatch.setattr(mod, "ETC_HOSTNAME", str(tmp_path / "missing-dir" / "hostname"))
    res, _ = make("x", hostname="web1", pretty_hostname="", transient_hostname="")
    no_bus(res)
    with pytest.raises(ResourceError, match="cannot set the static hostname: No such file or directory"):
        res.check_apply(True)


class FakeHostnamed:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.props = {"PrettyHostname": "", "StaticHostname": "old", "Hostname": "old"}
        self.calls: list[tuple] = []

    def get_all(self, dest, path, interface):
        return {**self.props, "Hostname": self.host.kernel}

    def call(self, dest, path, interface, method, signature=None, body=(), timeout=None):
        self.calls.append((method, body))
        if method == "SetStaticHostname":
            self.props["StaticHostname"] = body[0]
            self.host.kernel = body[0]          # hostnamed sets the kernel's name from a static one
        elif method == "SetPrettyHostname":
            self.props["PrettyHostname"] = body[0]
        elif method == "SetHostname" and not self.props["StaticHostname"]:
            self.host.kernel = body[0]
        return ()


def test_through_hostnamed_in_mgmts_order(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch)
    fake = FakeHostnamed(host)
    res, reports = make("x", pretty_hostname="Web One", static_hostname="web1", transient_hostname="web1-now")
    res.hold.get = lambda: fake
    assert res.check_apply(True) is False
    assert [method for method, _ in fake.calls] == ["SetPrettyHostname", "SetStaticHostname", "SetHostname"]
    assert fake.calls[1][1] == ("web1", False)          # never interactive (no polkit prompt)
    # hostnamed keeps the kernel at the static name: the transient one is set directly
    assert host.kernel == "web1-now"
    assert not host.etc_hostname.exists()                # hostnamed writes the files, not mgmtd
    assert res.check_apply(True) is True
    assert "hostnamed not available" not in reports.text()
