"""``mgmtd``: run a node, run an engine alone, or validate a graph."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from mgmtd import __version__, log, tls
from mgmtd.cluster.graphview import DEFAULT_FILTER, FILTERS
from mgmtd.cluster.keys import DEFAULT_NAMESPACE, MAX_IDEAL_SIZE, MIN_IDEAL_SIZE
from mgmtd.cluster.retention import DEFAULT_KEEP, parse_policy
from mgmtd.hostnames import check_hostname
from mgmtd.mgmtflags import add_refused_flags
from mgmtd.urls import is_loopback_host, parse_listen, parse_url_list

# URL flags (checked by check_input, which replaces each string by the tuple of
# its URLs): those etcd listens on take only an IP address or localhost
LISTEN_URL_FLAGS = ("client_urls", "server_urls")
URL_FLAGS = (*LISTEN_URL_FLAGS, "advertise_client_urls", "advertise_server_urls", "seeds", "endpoints")

DEFAULT_PREFIX = "/var/lib/mgmtd"

# every flag of these commands may also come from the environment (MGMTD_<FLAG>)
ENV_COMMANDS = ("run", "engine", "validate")
ENV_PREFIX = "MGMTD_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class _Unset:
    """The default of a flag that may come from the environment: replaced after
    parsing by the environment's value or by the flag's real default."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def listen_address(text: str) -> str:
    """--prometheus-listen: HOST:PORT (checked here, parsed again by check_input)."""
    try:
        parse_listen("", text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(": ")) from None
    return text.strip()


def retention_policy(text: str):
    """--backup-keep: last=N,hourly=N,daily=N,weekly=N (cluster/retention.py)."""
    try:
        return parse_policy(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def converger_seconds(text: str) -> float | None:
    """mgmt's --converger-timeout: seconds, or -1 (its default) for none."""
    if text.strip() == "-1":
        return None
    return seconds(text)


def converger_settings(converged_timeout: float | None, converger_timeout: float | None,
                       converged_exit: bool) -> tuple[float | None, float | None]:
    """(exit after, report converged after) from our --converged-timeout (which
    exits) and mgmt's --converger-timeout (which only reports converged, and
    exits with --converged-exit). ValueError: one line naming the flags."""
    if converged_timeout is not None and converger_timeout is not None \
            and converged_timeout != converger_timeout:
        raise ValueError(f"--converged-timeout {converged_timeout:g} and --converger-timeout "
                         f"{converger_timeout:g} disagree: give one")
    if converged_timeout is not None:
        return converged_timeout, None
    if converged_exit:
        if converger_timeout is None:
            raise ValueError("--converged-exit: needs --converger-timeout N (exit after N "
                             "seconds converged)")
        return converger_timeout, None
    return None, converger_timeout


def add_frontend(parser: argparse.ArgumentParser) -> None:
    frontends = parser.add_subparsers(dest="frontend", metavar="FRONTEND", required=True,
                                      title="frontends (where the graph comes from)")
    yaml_parser = frontends.add_parser("yaml", help="a YAML graph file (mgmt's format)",
                                       description="Apply the graph in a YAML file.")
    yaml_parser.add_argument("graph_file", metavar="FILE", help="the YAML graph")
    frontends.add_parser("empty", help="no graph: only take part in the cluster",
                         description="Run with an empty graph.")
    lang = frontends.add_parser("lang", help="mgmt's mcl language: not supported, refused",
                                description="mgmt's mcl language is not supported by mgmtd.")
    lang.add_argument("lang_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostname", default=None,
                        help="this node's unique name in the cluster: letters, digits, '-' and '.' "
                             "as in DNS (default: the OS hostname)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="etcd key prefix for all of mgmtd's keys (default: %(default)s)")
    parser.add_argument("--converged-timeout", type=seconds, default=None, metavar="SECONDS",
                        help="exit once every resource has been in state for this long "
                             "(status 0; 1 if some resources failed); as mgmt's "
                             "--converger-timeout N --converged-exit")
    parser.add_argument("--converger-timeout", type=converger_seconds, default=None,
                        metavar="SECONDS",
                        help="mgmt's flag: converged after this many quiet seconds (logged, "
                             "--converger-status-file); exits only with --converged-exit; "
                             "-1: never (default: converged after 3 quiet seconds, no exit)")
    parser.add_argument("--converged-exit", action="store_true",
                        help="exit once converged for --converger-timeout seconds "
                             "(status 0; 1 if some resources failed)")
    parser.add_argument("--converger-status-file", default=None, metavar="FILE",
                        help="append 'true' to FILE each time the engine becomes converged, "
                             "'false' each time it stops being (as mgmt)")
    parser.add_argument("--max-runtime", type=seconds, default=0.0, metavar="SECONDS",
                        help="exit with status 1 after about this many seconds (as mgmt; "
                             "default: 0, no limit)")
    parser.add_argument("--noop", action="store_true",
                        help="report what would change (with a diff for file content), change nothing")
    parser.add_argument("--no-autoedges", action="store_true",
                        help="add no automatic edges: as meta autoedge: false on every resource "
                             "(mgmt's flag)")
    parser.add_argument("--no-watch", action="store_true",
                        help="never change the graph by itself: the graph file is not reloaded "
                             "when edited, and the cluster's exports are collected once; SIGHUP "
                             "still reloads both; resources still repair drift (mgmt's flag)")
    parser.add_argument("--no-autogroup", action="store_true",
                        help="group nothing: every resource runs its own check/apply, as meta "
                             "autogroup: false on every resource (mgmt's flag)")
    parser.add_argument("--sema", type=int, default=-1, metavar="N",
                        help="add a semaphore of N slots to every resource: at most N check/apply "
                             "runs at once (1: one at a time); <= 0: off (mgmt's flag; default: "
                             "%(default)s)")
    parser.add_argument("--graphviz", default=None, metavar="FILE",
                        help="write the running graph as Graphviz DOT to FILE@HOSTNAME at every "
                             "graph swap and state change (at most once a second): fill colour by "
                             "state, edges solid (explicit), dashed (autoedge), bold blue (notify), "
                             "collected resources marked with their exporters; with the "
                             "--graphviz-filter program on PATH also FILE@HOSTNAME.png (mgmt's flag)")
    parser.add_argument("--graphviz-filter", default=None, choices=FILTERS, metavar="PROG",
                        help=f"the Graphviz program that draws the PNG: {', '.join(FILTERS)} "
                             f"(default: {DEFAULT_FILTER}; needs --graphviz; mgmt's flag)")
    parser.add_argument("--log-level", choices=log.LEVELS, default="info",
                        help="least severe messages to log (default: %(default)s)")
    add_tls(parser)


def add_tls(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "mutual TLS (all three, or none; URLs are then https:// and etcd auth is on: each node may "
        "write only its own keys, see docs/security.md)")
    group.add_argument("--tls-ca", metavar="FILE", help="the cluster CA certificate (mgmtd certs init)")
    group.add_argument("--tls-cert", metavar="FILE",
                       help="this node's certificate (mgmtd certs issue HOST: its name is the node's etcd user)")
    group.add_argument("--tls-key", metavar="FILE", help="this node's private key")


def tls_from(args: argparse.Namespace) -> tls.TLSFiles | None:
    """The TLS files from --tls-*, for whatever this process connects to etcd with."""
    return tls.from_args(args.tls_ca, args.tls_cert, args.tls_key)


def env_name(action: argparse.Action) -> str:
    """MGMTD_<FLAG> for a flag: its first long name, upper case, '-' -> '_'."""
    flag = next(o for o in action.option_strings if o.startswith("--"))
    return ENV_PREFIX + flag[2:].upper().replace("-", "_")


def env_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags of ``parser`` the environment may set: every documented option
    (not --help, not the supervisor's hidden ones)."""
    return [a for a in parser._actions
            if a.option_strings and a.help is not argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def parse_bool(variable: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{variable}: {text!r} is not a boolean (true: {', '.join(TRUE_WORDS)}; "
                     f"false: {', '.join(w for w in FALSE_WORDS if w)} or empty)")


def env_value(action: argparse.Action, variable: str, text: str) -> object:
    """The value of a flag from its variable's text, as argparse would take it
    from the command line. ValueError: one line naming the variable."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        value = parse_bool(variable, text)
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    try:
        value = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
        name = getattr(action.type, "__name__", "")
        detail = str(err) if isinstance(err, argparse.ArgumentTypeError) else f"invalid {name} value"
        raise ValueError(f"{variable}: {text!r}: {detail}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{variable}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def add_env(parser: argparse.ArgumentParser, defaults: dict[str, object]) -> None:
    """Marks each flag of ``parser`` as settable from MGMTD_<FLAG>: its help says
    so, its default becomes UNSET (kept in ``defaults`` by dest)."""
    for action in env_actions(parser):
        variable = env_name(action)
        if action.help and "%(default)" in action.help:
            action.help = action.help % {"default": action.default}
        action.help = f"{action.help or ''} (env {variable})".lstrip()
        defaults[action.dest] = action.default
        action.default = UNSET


def resolve_env(args: argparse.Namespace, parser: argparse.ArgumentParser,
                environ: dict[str, str]) -> None:
    """Fills each flag not given on the command line from its MGMTD_<FLAG>
    variable, else its default: the command line wins. ValueError: one line
    naming the variable."""
    defaults: dict[str, object] = getattr(parser, "env_defaults", None) or {}
    for action in env_actions(parser):
        if getattr(args, action.dest, None) is not UNSET:
            continue
        variable = env_name(action)
        if variable in environ:
            setattr(args, action.dest, env_value(action, variable, environ[variable]))
        else:
            setattr(args, action.dest, defaults.get(action.dest))


def flag_variables(command: str) -> frozenset[str]:
    """The MGMTD_<FLAG> variables a command reads (others, such as
    MGMTD_DPKG_LOCK_TIMEOUT, are no flag's)."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(env_name(a) for a in env_actions(commands.choices[command]))


def drop_flag_variables(environ: dict[str, str] | os._Environ, command: str) -> None:
    """Removes the variables of ``command``'s flags: ``mgmtd run`` has resolved
    them into the engine child's command line, which must not read them again
    (MGMTD_WORKERS=x would stop it). Others, such as MGMTD_DPKG_LOCK_TIMEOUT, stay."""
    for name in flag_variables(command):
        environ.pop(name, None)


class EnvArgumentParser(argparse.ArgumentParser):
    """A command's parser whose flags not given on the command line come from
    MGMTD_<FLAG> (see add_env), else their defaults. A bad variable raises
    ValueError naming it (main prints that one line)."""

    env_defaults: dict[str, object] | None = None

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        if self.env_defaults:
            resolve_env(parsed, self, dict(os.environ))
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgmtd",
        description="A configuration-management agent: every node runs one; the nodes "
                    "cluster on etcd servers mgmtd starts itself, and each applies a graph of "
                    "resources and keeps it applied.",
    )
    parser.add_argument("--version", action="version", version=f"mgmtd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=EnvArgumentParser)

    run = commands.add_parser(
        "run", help="run this node: etcd, the cluster, and the engine",
        description="Run this node: start and supervise etcd, register in the cluster, and "
                    "apply the graph. Stops cleanly on SIGTERM/SIGINT; SIGHUP reloads the graph.",
        epilog="example: mgmtd run --hostname h1 --prefix /tmp/mgmtd-h1 "
               "--converged-timeout 5 yaml examples/yaml/file1.yaml",
    )
    add_common(run)
    run.add_argument("--prefix", default=None,
                     help="state directory: etcd data and pid files "
                          f"(default: $STATE_DIRECTORY or {DEFAULT_PREFIX})")
    run.add_argument("--tmp-prefix", action="store_true",
                     help="use a fresh temporary state directory (mgmtd-HOSTNAME-* in $TMPDIR), "
                          "removed at exit; not with --prefix (mgmt's flag)")
    run.add_argument("--allow-tmp-prefix", action="store_true",
                     help="when the state directory cannot be created or written, use a "
                          "temporary one as --tmp-prefix does, with a warning (mgmt's flag)")
    run.add_argument("--no-raise-limits", action="store_true",
                     help="mgmt's flag: do not raise limits such as inotify's; mgmtd never "
                          "raises them, so this changes nothing")
    add_refused_flags(run)
    run.add_argument("--client-urls", default="http://127.0.0.1:2379",
                     metavar="URLS", help="where etcd listens for clients: comma-separated "
                     "http(s)://IP:PORT (default: %(default)s)")
    run.add_argument("--server-urls", default="http://127.0.0.1:2380",
                     metavar="URLS", help="where etcd listens for its peers: comma-separated "
                     "http(s)://IP:PORT (default: %(default)s)")
    run.add_argument("--advertise-client-urls", default=None, metavar="URLS",
                     help="client URLs other nodes should use, http(s)://HOST:PORT "
                          "(default: --client-urls)")
    run.add_argument("--advertise-server-urls", default=None, metavar="URLS",
                     help="peer URLs other nodes should use, http(s)://HOST:PORT (default: --server-urls)")
    run.add_argument("--seeds", default=None, metavar="URLS",
                     help="client URLs of a running cluster to join (default: none, i.e. bootstrap "
                          "a new cluster unless this node was in one before)")
    run.add_argument("--no-server", action="store_true",
                     help="never run etcd here: a client only (needs --seeds; works against any etcd)")
    run.add_argument("--ideal-cluster-size", type=int, default=None, metavar="N",
                     help="how many etcd voters the cluster aims for; stored in etcd by the node "
                          "that bootstraps it (default: 5); change it later with mgmtctl")
    run.add_argument("--grace-period", type=seconds, default=10.0, metavar="SECONDS",
                     help="how long a voter may be unhealthy before it is replaced (default: 10)")
    run.add_argument("--learner-deadline", type=seconds, default=30.0, metavar="SECONDS",
                     help="how long a nominated node has to start etcd and catch up (default: 30)")
    run.add_argument("--etcd-binary", default="etcd", metavar="PATH",
                     help="the etcd server to run (default: etcd on PATH)")
    run.add_argument("--prometheus", action="store_true",
                     help="serve metrics for Prometheus on /metrics (mgmt's flag; names in "
                          "docs/operations.md)")
    run.add_argument("--prometheus-listen", type=listen_address, default=None, metavar="HOST:PORT",
                     help="where /metrics listens, with --prometheus (default: 127.0.0.1:9233, as mgmt); "
                          "with --tls-* it is https and asks for a client certificate of the cluster's CA")
    run.add_argument("--prometheus-insecure", action="store_true",
                     help="with --tls-*: serve /metrics over plain http, no client certificate; only on "
                          "a loopback --prometheus-listen")
    run.add_argument("--backup-dir", default=None, metavar="DIR",
                     help="where this node keeps the backups it takes, e.g. an off-node mount "
                          "(default: PREFIX/backups)")
    run.add_argument("--backup-interval", type=seconds, default=900.0, metavar="SECONDS",
                     help="the leader backs etcd up this often, and before every membership change "
                          "(default: 900; 0: only before changes and on 'mgmtctl backup now')")
    run.add_argument("--backup-keep", type=retention_policy, default=parse_policy(DEFAULT_KEEP),
                     metavar="RULES",
                     help="which backups to keep: the N newest (last=N) and the newest of each of "
                          f"the N latest hours, days, weeks that have one (default: {DEFAULT_KEEP})")
    add_frontend(run)

    engine = commands.add_parser(
        "engine", help="run only the resource engine (the supervisor starts this itself)",
        description="Run only the resource engine against existing etcd endpoints.",
    )
    add_common(engine)
    engine.add_argument("--endpoints", default=None, metavar="URLS",
                        help="etcd client URLs (default: none, or from --stdin-membership)")
    engine.add_argument("--stdin-membership", action="store_true", help=argparse.SUPPRESS)
    engine.add_argument("--report-state", action="store_true", help=argparse.SUPPRESS)
    engine.add_argument("--workers", type=int, default=8, help="parallel workers (default: 8)")
    engine.add_argument("--prefix", default=None,
                        help="state directory: the records of meta.reverse (PREFIX/reverse/), the "
                             "loaded graph and what checks proved, for the next start (PREFIX/cache/) "
                             f"(default: $STATE_DIRECTORY or {DEFAULT_PREFIX}; mgmtd run passes its own)")
    add_frontend(engine)

    certs = commands.add_parser(
        "certs", help="create the cluster CA and node certificates for --tls-*",
        description="Create a cluster CA (init) and node certificates signed by it (issue). Keys "
                    "are written 0600 and never overwritten.")
    certs_commands = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = certs_commands.add_parser("init", help="create ca.crt and ca.key in --dir")
    init.add_argument("--dir", required=True, help="where the CA lives (created 0700)")
    issue = certs_commands.add_parser("issue", help="create HOST.crt and HOST.key signed by the CA")
    issue.add_argument("host", metavar="HOST", help="the node's --hostname (the certificate's name)")
    issue.add_argument("--dir", required=True, help="the CA's directory; the files are written there")
    issue.add_argument("--address", action="append", default=[], metavar="IP",
                       help="an IP address the node serves on (repeat; 127.0.0.1 is always added)")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME",
                       help="another DNS name of the node (repeat)")

    restore = commands.add_parser(
        "restore", help="restore a backup on this node, its mgmtd stopped (after losing quorum)",
        description="Restore a backup (an id from 'mgmtctl backups', or a snapshot file) on this "
                    "node as a one-member cluster with a new cluster id, for a node whose mgmtd is "
                    "stopped; with it running, use 'mgmtctl restore'. Refused while the cluster has "
                    "quorum, unless --force. Then start mgmtd: the other nodes rejoin as volunteers.")
    restore.add_argument("--prefix", default=None,
                         help=f"the node's state directory (default: $STATE_DIRECTORY or {DEFAULT_PREFIX})")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument("--force", action="store_true", help="restore even though the cluster has quorum")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="a backup id, or the path of a snapshot file")

    validate = commands.add_parser(
        "validate", help="check a YAML graph without running it",
        description="Check a YAML graph: syntax, kinds, fields, names, edges, cycles. "
                    "Prints one line per problem as FILE:LINE:COL and exits 2 on error.",
    )
    validate.add_argument("graph_file", metavar="FILE")
    for name in ENV_COMMANDS:
        sub = commands.choices[name]
        sub.env_defaults = {}
        add_env(sub, sub.env_defaults)
        if sub.env_defaults:
            sub.epilog = (
                f"Every flag may also be set in the environment as {ENV_PREFIX}<FLAG> (upper "
                f"case, '-' as '_'); the command line wins. Booleans: {', '.join(TRUE_WORDS)} are "
                f"true; {', '.join(w for w in FALSE_WORDS if w)} or empty are false. "
                + (sub.epilog[0].upper() + sub.epilog[1:] if sub.epilog else ""))
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from mgmtd.yamlgraph.errors import GraphError
    from mgmtd.yamlgraph.loader import load_file

    try:
        spec = load_file(args.graph_file)
    except GraphError as err:
        print(f"mgmtd: {err}", file=sys.stderr)
        return 2
    for warning in spec.warnings:
        print(f"mgmtd: {warning}", file=sys.stderr)
    print(f"{args.graph_file}: ok: graph {spec.name}: {len(spec.resources)} resources, "
          f"{len(spec.exports)} exported, {len(spec.edges)} edges, {len(spec.collect)} collect rules")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from mgmtd import certs

    try:
        if args.certs_command == "init":
            paths = certs.init_ca(args.dir)
        else:
            paths = certs.issue(args.dir, args.host, args.address, args.dns)
    except (OSError, ValueError) as err:
        print(f"mgmtd: {err}", file=sys.stderr)
        return 1
    print("wrote " + " and ".join(paths))
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from mgmtd.engine.main import EngineOptions, run

    log.setup(args.hostname, args.log_level)
    try:
        files = tls_from(args)
    except ValueError as err:
        log.get("engine").error("%s", err)
        return 1
    return run(EngineOptions(
        hostname=args.hostname, namespace=args.namespace,
        graph_file=getattr(args, "graph_file", None), converged_timeout=args.converged_timeout,
        noop=args.noop, endpoints=args.endpoints, membership_from_stdin=args.stdin_membership,
        report_state=args.report_state, workers=max(1, args.workers), tls=files,
        converged_after=3.0 if args.converged_after is None else args.converged_after,
        converger_status_file=args.converger_status_file, max_runtime=args.max_runtime,
        no_autoedges=args.no_autoedges, no_autogroup=args.no_autogroup, no_watch=args.no_watch,
        prefix=os.path.abspath(args.prefix or default_prefix(os.environ)),
        sema=args.sema,
        graphviz=args.graphviz, graphviz_filter=args.graphviz_filter or DEFAULT_FILTER,
    ))


def default_prefix(environ: dict[str, str] | os._Environ) -> str:
    """--prefix when not given: systemd's StateDirectory, else /var/lib/mgmtd."""
    return environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_PREFIX


def cmd_run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    log.setup(args.hostname, args.log_level)
    if not args.tmp_prefix:
        prefix = os.path.abspath(args.prefix or default_prefix(os.environ))
        if not args.allow_tmp_prefix:
            return run_node(args, prefix)
        from mgmtd.supervisor.preflight import StartupError, check_prefix
        try:
            check_prefix(prefix)
        except StartupError as err:
            log.get("supervisor").warning("--allow-tmp-prefix: %s; using a temporary one", err)
        else:
            return run_node(args, prefix)
    try:
        prefix = tempfile.mkdtemp(prefix=f"mgmtd-{args.hostname}-")
    except OSError as err:
        log.get("supervisor").error("--tmp-prefix: cannot create a temporary directory: %s", err)
        return 1
    log.get("supervisor").warning("working prefix is temporary: %s (removed at exit)", prefix)
    try:
        return run_node(args, prefix)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def run_node(args: argparse.Namespace, prefix: str) -> int:
    from mgmtd.supervisor.config import NodeConfig
    from mgmtd.supervisor.node import StartupError, Supervisor

    graph = getattr(args, "graph_file", None)
    try:
        files = tls_from(args)
    except ValueError as err:
        log.get("supervisor").error("%s", err)
        return 1
    drop_flag_variables(os.environ, "engine")  # the engine child inherits the environment
    config = NodeConfig(
        hostname=args.hostname, prefix=prefix,
        client_urls=args.client_urls, server_urls=args.server_urls,
        advertise_client_urls=args.advertise_client_urls,
        advertise_server_urls=args.advertise_server_urls, namespace=args.namespace,
        graph_file=os.path.abspath(graph) if graph else None,
        converged_timeout=args.converged_timeout, noop=args.noop, etcd_binary=args.etcd_binary,
        log_level=args.log_level, ideal_cluster_size=args.ideal_cluster_size or 5,
        seeds=args.seeds, no_server=args.no_server, grace_period=args.grace_period,
        learner_deadline=args.learner_deadline, tls=files, converged_after=args.converged_after,
        converger_status_file=args.converger_status_file, max_runtime=args.max_runtime,
        no_autoedges=args.no_autoedges, no_autogroup=args.no_autogroup, no_watch=args.no_watch,
        sema=args.sema,
        graphviz=args.graphviz, graphviz_filter=args.graphviz_filter,
        prometheus_listen=args.prometheus_listen if args.prometheus else None,
        prometheus_insecure=args.prometheus_insecure,
        backup_dir=args.backup_dir, backup_interval=args.backup_interval, backup_keep=args.backup_keep,
    )
    try:
        return Supervisor(config).run()
    except StartupError as err:
        log.get("supervisor").error("%s", err)
        return 1
    except Exception as err:  # a bug: one line for the operator, the trace at debug level
        log.get("supervisor").debug("internal error", exc_info=True)
        log.get("supervisor").error("internal error: %r (run with --log-level debug for details)", err)
        return 1


def cmd_restore(args: argparse.Namespace) -> int:
    from mgmtd.supervisor.offline import restore_offline

    log.setup("mgmtd", "warning")
    prefix = os.path.abspath(args.prefix or default_prefix(os.environ))

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            print("mgmtd: not asking without a terminal: add --yes", file=sys.stderr)
            return False
        try:
            return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:   # Ctrl-D: no answer is no
            print(file=sys.stderr)
            return False

    return restore_offline(prefix, args.snapshot, args.yes, args.force, confirm,
                           lambda line: print(line, flush=True))


def _check_certs(args: argparse.Namespace) -> None:
    if args.certs_command != "issue":
        return
    try:
        check_hostname(args.host)  # the certificate's name: the node's --hostname (reserved names: issue)
    except ValueError as err:
        raise ValueError(f"certs issue HOST: {err}") from None
    for address in args.address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"--address: {address!r} is not an IP address") from None
    for name in args.dns:
        try:
            check_hostname(name.removeprefix("*."))  # a wildcard certificate name is fine here
        except ValueError as err:
            raise ValueError(f"--dns: {err}") from None


def check_input(args: argparse.Namespace, os_hostname: str) -> None:
    """Checks what argparse cannot before anything starts, filling in defaults
    that depend on the machine. ValueError: one line naming the flag."""
    if args.command == "certs":
        _check_certs(args)
    if args.command not in ("run", "engine"):
        return
    if getattr(args, "frontend", None) == "lang":
        raise ValueError(f"{args.command} lang: mgmt's mcl language is not supported by mgmtd; "
                         "write the graph in YAML (yaml FILE)")
    if args.hostname is None:
        try:
            args.hostname = check_hostname(os_hostname)
        except ValueError as err:
            raise ValueError(f"--hostname (default: the OS hostname): {err}") from None
    else:
        try:
            check_hostname(args.hostname)
        except ValueError as err:
            raise ValueError(f"--hostname: {err}") from None
    if getattr(args, "tmp_prefix", False) and args.prefix is not None:
        raise ValueError("--tmp-prefix: not with --prefix (a temporary prefix or a given one)")
    args.converged_timeout, args.converged_after = converger_settings(
        args.converged_timeout, args.converger_timeout, args.converged_exit)
    if args.converger_status_file is not None:
        args.converger_status_file = os.path.abspath(args.converger_status_file)
    if args.graphviz_filter is not None and args.graphviz is None:
        raise ValueError("--graphviz-filter: needs --graphviz FILE (the filter draws that file)")
    if args.graphviz is not None:
        if not args.graphviz or args.graphviz.endswith("/"):
            raise ValueError(f"--graphviz: {args.graphviz!r} is not a file name")
        args.graphviz = os.path.abspath(args.graphviz)
    if args.command == "run":
        check_prometheus(args)
    size = getattr(args, "ideal_cluster_size", None)
    if size is not None and not MIN_IDEAL_SIZE <= size <= MAX_IDEAL_SIZE:
        raise ValueError(f"--ideal-cluster-size: must be at least {MIN_IDEAL_SIZE} "
                         f"and at most {MAX_IDEAL_SIZE}, not {size}")
    for dest in URL_FLAGS:
        if hasattr(args, dest):
            value = getattr(args, dest)
            flag = "--" + dest.replace("_", "-")
            setattr(args, dest, () if value is None else
                    parse_url_list(flag, value, listen=dest in LISTEN_URL_FLAGS))


def check_prometheus(args: argparse.Namespace) -> None:
    """--prometheus-*: replaces --prometheus-listen by (host, port). ValueError: one line."""
    if not args.prometheus:
        for flag in ("listen", "insecure"):
            if getattr(args, f"prometheus_{flag}"):
                raise ValueError(f"--prometheus-{flag}: needs --prometheus")
        return
    from mgmtd.supervisor.metrics import DEFAULT_LISTEN

    args.prometheus_listen = parse_listen("--prometheus-listen", args.prometheus_listen or DEFAULT_LISTEN)
    if args.prometheus_insecure:
        if not (args.tls_ca or args.tls_cert or args.tls_key):
            raise ValueError("--prometheus-insecure: only with --tls-* (without TLS /metrics is plain "
                             "http already)")
        if not is_loopback_host(args.prometheus_listen[0]):
            raise ValueError(f"--prometheus-insecure: /metrics would be open to the network on "
                             f"{args.prometheus_listen[0]}: only on a loopback --prometheus-listen "
                             "(127.0.0.1, ::1, localhost)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ValueError as err:  # a bad MGMTD_<FLAG>
        print(f"mgmtd: {err}", file=sys.stderr)
        return 2
    try:
        check_input(args, socket.gethostname())
    except ValueError as err:
        print(f"mgmtd: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "engine":
            return cmd_engine(args)
        if args.command == "certs":
            return cmd_certs(args)
        if args.command == "restore":
            return cmd_restore(args)
        return cmd_run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
