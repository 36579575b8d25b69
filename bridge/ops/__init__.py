"""How people see and run the daemon: the web endpoints, metrics, the heartbeat, systemd, logs,
the checks before start."""
