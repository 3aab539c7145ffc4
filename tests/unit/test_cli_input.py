"""Command-line input checks: host names and URL flags (issue 13, items 4 and 14)."""

from __future__ import annotations

import re

import pytest

from mgmtd import certs, tls
from mgmtd.cli import build_parser, check_input
from mgmtd.urls import parse_url_list

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


BAD_URLS = [
    ("http://127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
    ("http://127.0.0.1:0", "port 0 is out of range"),
    ("http://127.0.0.1:abc", "port 'abc' is not a number"),
    ("http://127.0.0.1:+1", "port '+1' is not a number"),
    ("http://127.0.0.1", "there is no port"),
    ("http://127.0.0.1:", "there is no port"),
    ("http://[::1", "closing ']'"),
    ("http://[vm]:2379", "[vm] is not an IPv6 address"),
    ("http://::1:2379", "IPv6 address goes in brackets"),
    ("http://:2379", "there is no host"),
    ("ftp://127.0.0.1:2379", "scheme 'ftp' is not http or https"),
    ("127.0.0.1:2379", "is not a URL like http://127.0.0.1:2379"),
    ("http://127.0.0.1:2379/v3", "a path ('/v3') is not allowed"),
    ("http://127.0.0.1:2379/?a=1", "a query"),
    ("http://127.0.0.1:2379#x", "a fragment"),
    ("http://user:pw@127.0.0.1:2379", "user information"),
    ("http://a b:2379", "neither an IP address nor a host name"),
    ("http://a/b:2379", "a path"),
]


@pytest.mark.parametrize("url,problem", BAD_URLS)
def test_bad_urls_are_one_line_naming_the_flag_and_the_url(url, problem):
    for flag in ("--client-urls", "--server-urls", "--advertise-client-urls", "--advertise-server-urls",
                 "--seeds"):
        args = build_parser().parse_args(["run", "--hostname", "h1", flag, f"http://127.0.0.1:2379,{url}",
                                          "empty"])
        with pytest.raises(ValueError) as err:
            check_input(args, "h1")
        assert str(err.value).startswith(f"{flag}: {url}: ") and problem in str(err.value), str(err.value)
    args = build_parser().parse_args(["engine", "--hostname", "h1", "--endpoints", url, "empty"])
    with pytest.raises(ValueError, match=f"^--endpoints: {re.escape(url)}: .*{re.escape(problem)}"):
        check_input(args, "h1")


def test_urls_etcd_listens_on_are_ip_addresses():
    with pytest.raises(ValueError, match="^--server-urls: http://node1:2380: etcd listens on IP addresses only"):
        parse_url_list("--server-urls", "http://node1:2380", listen=True)
    assert parse_url_list("--client-urls", "http://localhost:2379,http://0.0.0.0:2379", listen=True)
    assert parse_url_list("--seeds", "http://node1.example.com:2379") == ("http://node1.example.com:2379",)


def test_good_urls_are_normalized_as_etcd_takes_them():
    args = build_parser().parse_args(["run", "--hostname", "h1", "--client-urls",
                                      " HTTPS://127.0.0.1:2379/ , https://[::1]:2379,", "empty"])
    check_input(args, "h1")
    assert args.client_urls == ("https://127.0.0.1:2379", "https://[::1]:2379")
    assert args.server_urls == ("http://127.0.0.1:2380",)
    assert args.seeds == () and args.advertise_client_urls == ()
    args = build_parser().parse_args(["engine", "--hostname", "h1", "empty"])
    check_input(args, "h1")
    assert args.endpoints == ()
    with pytest.raises(ValueError, match="^--seeds: at least one URL is needed"):
        check_input(build_parser().parse_args(["run", "--hostname", "h1", "--seeds", " , ", "empty"]), "h1")
