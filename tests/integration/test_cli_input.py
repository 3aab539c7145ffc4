"""Bad command-line input to the real binary: exit status 2 and one line on
stderr naming the flag, before anything starts (issue 13, items 4 and 14).
The ``workdir`` fixture fails the test if an etcd or mgmtd is left running."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import MGMTCTL, MGMTD, free_port


def refused(args: list[str], flag: str) -> str:
    """Runs mgmtd, expects the one-line refusal naming ``flag``; returns it."""
    out = subprocess.run([MGMTD, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, (args, out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, (args, out.stderr)
    assert lines[0].startswith(f"mgmtd: {flag}: "), (args, lines[0])
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    return lines[0]


def run_args(workdir, *extra: str) -> list[str]:
    # --converged-timeout 0: should the flag pass, the node stops by itself instead of running on
    return ["run", "--prefix", str(workdir / "p"), "--client-urls", f"http://127.0.0.1:{free_port()}",
            "--server-urls", f"http://127.0.0.1:{free_port()}", "--converged-timeout", "0", *extra]


@pytest.mark.parametrize("name", ["", "a/b", "h1/x", "..", ".", "h 1", "a" * 300, "-h1"])
def test_run_refuses_a_bad_hostname_without_tls(workdir, name):
    line = refused([*run_args(workdir, f"--hostname={name}"), "empty"], "--hostname")
    assert "is not a valid host name" in line and "letters, digits and '-'" in line
    assert not (workdir / "p").exists()  # refused before the prefix was even created


@pytest.mark.parametrize("name", ["a/b", ".."])
def test_engine_refuses_a_bad_hostname(workdir, name):
    refused(["engine", f"--hostname={name}", "--converged-timeout", "0", "empty"], "--hostname")


@pytest.mark.parametrize("name", ["a/b", "..", "h 1"])
def test_certs_issue_refuses_a_bad_host(workdir, name):
    ca = workdir / "ca"
    subprocess.run([MGMTD, "certs", "init", "--dir", str(ca)], check=True, capture_output=True, timeout=60)
    refused(["certs", "issue", name, "--dir", str(ca)], "certs issue HOST")
    assert sorted(p.name for p in ca.iterdir()) == ["ca.crt", "ca.key"]


BAD_URLS = {
    "port": ("http://127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
    "letters": ("http://127.0.0.1:abc", "port 'abc' is not a number"),
    "bracket": ("http://[::1", "an IPv6 address lacks its closing ']'"),
    "scheme": ("ftp://127.0.0.1:2379", "scheme 'ftp' is not http or https"),
    "path": ("http://127.0.0.1:2379/v3", "a path ('/v3') is not allowed"),
}
CASES = [("--client-urls", kind) for kind in BAD_URLS] + [
    (flag, kind) for flag in ("--server-urls", "--advertise-client-urls", "--advertise-server-urls", "--seeds")
    for kind in ("port", "path")]


@pytest.mark.parametrize("flag,kind", CASES)
def test_run_refuses_a_bad_url_before_anything_starts(workdir, flag, kind):
    url, problem = BAD_URLS[kind]
    line = refused([*run_args(workdir, "--hostname", "h1"), flag, url, "empty"], flag)
    assert line.startswith(f"mgmtd: {flag}: {url}: {problem}")
    assert not (workdir / "p").exists()


@pytest.mark.parametrize("kind", ["port", "bracket", "scheme"])
def test_engine_refuses_a_bad_endpoint(workdir, kind):
    url, problem = BAD_URLS[kind]
    line = refused(["engine", "--hostname", "h1", "--converged-timeout", "0", "--endpoints", url, "empty"],
                   "--endpoints")
    assert line.startswith(f"mgmtd: --endpoints: {url}: {problem}")


@pytest.mark.parametrize("kind", ["port", "letters", "bracket", "scheme", "path"])
def test_mgmtctl_refuses_a_bad_endpoint(kind):
    url, problem = BAD_URLS[kind]
    out = subprocess.run([MGMTCTL, "--endpoints", url, "members"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"mgmtctl: --endpoints: {url}: {problem}")


def test_mgmtctl_forget_refuses_a_name_that_is_not_a_host():
    """'h1/file' once selected part of h1's exports for deletion while h1 ran."""
    out = subprocess.run([MGMTCTL, "--endpoints", f"http://127.0.0.1:{free_port()}", "forget", "h1/file"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "is not a valid host name" in out.stderr and "Traceback" not in out.stderr


def test_ideal_cluster_size_beyond_what_the_cluster_accepts_is_refused(workdir):
    line = refused([*run_args(workdir, "--hostname", "h1"), "--ideal-cluster-size", "12", "empty"],
                   "--ideal-cluster-size")
    assert "at most 9" in line
