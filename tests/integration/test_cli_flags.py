"""mgmt's flags through the real binary (issue 17): ``mgmtd run`` configured by
MGMTD_<FLAG> environment variables only, the command line winning. The
``workdir`` fixture fails the test if an etcd or mgmtd is left running."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.harness import MGMTD, free_port, one_file_graph, wait_for


def env_only(workdir, **flags: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGMTD_")}
    env.update({
        "MGMTD_HOSTNAME": "envnode", "MGMTD_PREFIX": str(workdir / "p"),
        "MGMTD_CLIENT_URLS": f"http://127.0.0.1:{free_port()}",
        "MGMTD_SERVER_URLS": f"http://127.0.0.1:{free_port()}",
        "MGMTD_CONVERGED_TIMEOUT": "0", "MGMTD_LOG_LEVEL": "debug",
    })
    env.update({"MGMTD_" + k.upper(): v for k, v in flags.items()})
    return env


def test_run_configured_by_the_environment_only(workdir):
    target = workdir / "out.txt"
    graph = one_file_graph(workdir / "g.yaml", target, "from env")
    # MGMTD_NOOP=yes: the engine child is told --noop by the supervisor, nothing is written
    out = subprocess.run([MGMTD, "run", "yaml", graph], env=env_only(workdir, noop="yes"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "envnode" in out.stderr and "would create" in out.stderr, out.stderr
    assert (workdir / "p").is_dir() and not target.exists()
    assert "Traceback" not in out.stderr
    # the command line wins over the environment (MGMTD_LOG_LEVEL=debug)
    out = subprocess.run([MGMTD, "run", "--log-level", "info", "yaml", graph],
                         env=env_only(workdir, noop="false"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert target.read_text() == "from env"
    assert " DEBUG " not in out.stderr


def test_a_bad_variable_is_refused_before_anything_starts(workdir):
    out = subprocess.run([MGMTD, "run", "empty"], env=env_only(workdir, grace_period="soon"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["mgmtd: MGMTD_GRACE_PERIOD: 'soon': 'soon' is not a number of seconds"]
    assert not (workdir / "p").exists()


def test_converger_timeout_reports_runs_on_and_max_runtime_ends_it(workdir):
    """mgmt's --converger-timeout alone: 'true' in the status file, no exit; a
    drift repaired appends 'false' then 'true'; --max-runtime ends it with 1."""
    target = workdir / "out.txt"
    graph = one_file_graph(workdir / "g.yaml", target, "wanted")
    status = workdir / "status"
    log = workdir / "engine.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "--converger-timeout", "1",
                                 "--converger-status-file", str(status), "--max-runtime", "20",
                                 "yaml", graph], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: status.exists() and status.read_text() == "true\n", 15, "converged")
        assert proc.poll() is None, log.read_text()       # reported, not exited
        target.write_text("drifted")
        wait_for(lambda: status.read_text() == "true\nfalse\ntrue\n", 15, "converged again")
        assert target.read_text() == "wanted"
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "max runtime reached (20.0s)" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_converged_exit_through_mgmtd_run(workdir):
    graph = one_file_graph(workdir / "g.yaml", workdir / "out.txt", "x")
    env = env_only(workdir, converger_timeout="1", converged_exit="1")
    del env["MGMTD_CONVERGED_TIMEOUT"]
    out = subprocess.run([MGMTD, "run", "--converger-status-file", str(workdir / "s"), "yaml", graph],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (workdir / "s").read_text() == "true\n"


def test_max_runtime_through_mgmtd_run(workdir):
    env = env_only(workdir, max_runtime="3")
    del env["MGMTD_CONVERGED_TIMEOUT"]
    out = subprocess.run([MGMTD, "run", "empty"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "max runtime reached (3.0s): stopping with status 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_autoedges(workdir):
    """One worker, resources dispatched in name order: a-file runs before b-dir,
    its parent directory, unless the autoedge makes it wait."""
    root = workdir / "x"
    graph = workdir / "g.yaml"
    graph.write_text(f'graph: g\nresources:\n  file:\n  - name: a-file\n    path: "{root}/d/f"\n'
                     f'    content: "hi"\n  - name: b-dir\n    path: "{root}/d/"\n    state: exists\n')
    runs = []
    for flags in ([], ["--no-autoedges"]):
        root.mkdir()
        runs.append(subprocess.run([MGMTD, "engine", "--hostname", "t", "--workers", "1",
                                    "--converged-timeout", "1", *flags, "yaml", str(graph)],
                                   capture_output=True, text=True, timeout=60))
        (root / "d" / "f").unlink(missing_ok=True)
        (root / "d").rmdir()
        root.rmdir()
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[1].returncode == 1, runs[1].stderr
    assert "file[a-file]: parent directory" in runs[1].stderr


def test_tmp_prefix_is_fresh_and_removed_at_exit(workdir):
    env = env_only(workdir)
    del env["MGMTD_PREFIX"]
    env["TMPDIR"] = str(workdir / "tmp")
    (workdir / "tmp").mkdir()
    out = subprocess.run([MGMTD, "run", "--tmp-prefix", "empty"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    used = str(workdir / "tmp" / "mgmtd-envnode-")
    assert f"working prefix is temporary: {used}" in out.stderr
    assert "etcd" in out.stderr and not list((workdir / "tmp").iterdir())  # used, then removed
    out = subprocess.run([MGMTD, "run", "--tmp-prefix", "--prefix", str(workdir / "p"), "empty"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr.splitlines()) == (
        2, ["mgmtd: --tmp-prefix: not with --prefix (a temporary prefix or a given one)"])


def test_no_watch_keeps_the_graph_until_sighup_and_still_repairs_drift(workdir):
    target = workdir / "out.txt"
    graph = workdir / "g.yaml"
    one_file_graph(graph, target, "first")
    log = workdir / "engine.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "--no-watch", "yaml", str(graph)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: target.exists() and target.read_text() == "first", 15, "first applied")
        one_file_graph(graph, target, "second")          # an edit: not reloaded
        target.write_text("drifted")                     # drift: still repaired, to the old graph
        wait_for(lambda: target.read_text() == "first", 15, "drift repaired")
        proc.send_signal(signal.SIGHUP)                  # asked for: reloaded
        wait_for(lambda: target.read_text() == "second", 15, "reloaded on SIGHUP")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "reloaded from" in text and "(requested)" in text
    assert not [line for line in text.splitlines() if "reloaded from" in line and "(requested)" not in line]


def test_allow_tmp_prefix_only_when_the_prefix_cannot_be_used(workdir):
    env = env_only(workdir)
    (workdir / "a-file").write_text("")
    env["MGMTD_PREFIX"] = str(workdir / "a-file" / "p")  # under a file: never a directory, even for root
    env["TMPDIR"] = str(workdir / "tmp")
    (workdir / "tmp").mkdir()
    refused = subprocess.run([MGMTD, "run", "empty"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert f"cannot use prefix {workdir / 'a-file' / 'p'}: Not a directory" in refused.stderr
    out = subprocess.run([MGMTD, "run", "--allow-tmp-prefix", "empty"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--allow-tmp-prefix: cannot use prefix" in out.stderr
    assert f"working prefix is temporary: {workdir / 'tmp' / 'mgmtd-envnode-'}" in out.stderr
    assert not list((workdir / "tmp").iterdir())
    env["MGMTD_PREFIX"] = str(workdir / "p")  # a usable prefix is used as given
    out = subprocess.run([MGMTD, "run", "--allow-tmp-prefix", "empty"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "temporary" not in out.stderr and (workdir / "p" / "node.json").exists()


def test_mgmt_flags_mgmtd_does_not_have_are_refused_with_the_reason(workdir):
    """Before anything starts: nothing listens, nothing is created."""
    env = env_only(workdir)
    for argv, reason in ((["--ssh-url", "ssh://u@h:22", "empty"], "--ssh-url: mgmt's flag is not "
                          "supported by mgmtd: mgmtd reaches etcd directly (--seeds), not over SSH"),
                         (["--no-pgp", "empty"], "--no-pgp: mgmt's flag is not supported by mgmtd"),
                         (["lang", "main.mcl"], "run lang: mgmt's mcl language is not supported")):
        out = subprocess.run([MGMTD, "run", *argv], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert reason in out.stderr and "Traceback" not in out.stderr
    assert not (workdir / "p").exists()
    out = subprocess.run([MGMTD, "run", "--no-raise-limits", "empty"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_mgmtd_folder_where_it_is_started_is_never_imported(workdir):
    """The engine child and the graph check run as ``python -P -m mgmtd.cli``:
    the working directory is not on their sys.path."""
    trap = workdir / "cwd" / "mgmtd"
    trap.mkdir(parents=True)
    (trap / "__init__.py").write_text("raise SystemExit('the wrong mgmtd was imported')\n")
    graph = one_file_graph(workdir / "g.yaml", workdir / "out.txt", "x")
    out = subprocess.run([MGMTD, "run", "yaml", graph], env=env_only(workdir), cwd=workdir / "cwd",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "the wrong mgmtd" not in out.stderr and (workdir / "out.txt").read_text() == "x"
