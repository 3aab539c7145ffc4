"""Real machines for the tests and ``make fleet``: systemd booted as PID 1 in
fresh namespaces, mgmtd installed by ``make install-service`` (fleet.py)."""
