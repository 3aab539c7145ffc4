"""Command-line input checks: host names and URL flags (issue 13, items 4 and 14)."""

from __future__ import annotations

import pytest

from mgmtd import certs, tls
from mgmtd.cli import build_parser, check_input

BAD_HOSTNAMES = ["", "a/b", "h1/x", ".", "..", "a..b", ".h1", "h1.", "h 1", " h1", "h1\n", "a" * 300,
                 "a" * 64, "-h1", "h1-", "h1.-x", "h_1", "hé", "h1:2", "*"]
GOOD_HOSTNAMES = ["h1", "n-1", "node1.example.com", "A1", "1", "a" * 63,
                  ".".join(["a" * 63] * 3 + ["a" * 61])]  # 253 characters


@pytest.mark.parametrize("name", BAD_HOSTNAMES)
def test_bad_host_names_are_refused_with_or_without_tls(name):
    with pytest.raises(ValueError, match="is not a valid host name .*: use letters, digits and '-'"):
        tls.check_host_name(name)
    args = build_parser().parse_args(["run", f"--hostname={name}", "empty"])
    with pytest.raises(ValueError, match=r"^--hostname: .* is not a valid host name") as err:
        check_input(args, "h1")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", GOOD_HOSTNAMES)
def test_good_host_names_pass(name):
    tls.check_host_name(name)
    args = build_parser().parse_args(["engine", "--hostname", name, "empty"])
    check_input(args, "os-name")
    assert args.hostname == name


def test_reserved_names_stay_refused_with_tls_only():
    for name in (tls.ROOT_USER, tls.JOIN_USER):
        with pytest.raises(ValueError, match="reserved"):
            tls.check_host_name(name)
        check_input(build_parser().parse_args(["run", f"--hostname={name}", "empty"]), "h1")
        check_input(build_parser().parse_args(["certs", "issue", name, "--dir", "ca"]), "h1")


def test_the_os_hostname_is_the_default_and_checked_like_a_flag():
    args = build_parser().parse_args(["run", "empty"])
    check_input(args, "node1.example.com")
    assert args.hostname == "node1.example.com"
    with pytest.raises(ValueError, match=r"^--hostname \(default: the OS hostname\): 'my_host'"):
        check_input(build_parser().parse_args(["run", "empty"]), "my_host")


def test_certs_issue_refuses_a_bad_host_before_touching_the_ca(tmp_path):
    for name in ("..", "a/b", "h 1"):
        with pytest.raises(ValueError, match="^certs issue HOST: .* is not a valid host name"):
            check_input(build_parser().parse_args(["certs", "issue", name, "--dir", str(tmp_path)]), "h1")
        with pytest.raises(ValueError, match="is not a valid host name"):
            certs.issue(str(tmp_path), name, [], [])
    for flag, value in (("--address", "not-an-ip"), ("--dns", "a/b")):
        with pytest.raises(ValueError, match=f"^{flag}: "):
            check_input(build_parser().parse_args(["certs", "issue", "h1", "--dir", str(tmp_path),
                                                   flag, value]), "h1")
    check_input(build_parser().parse_args(["certs", "issue", "h1", "--dir", str(tmp_path), "--dns",
                                           "*.example.com", "--address", "::1"]), "h1")
