"""A real mosquitto broker per test (or per module): its own port and persistence directory."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        listener_extra: str = "",
        save_every_change: bool = False,
    ):
        """`save_every_change`: write the session store after each queued message, so a
        SIGKILLed broker keeps its whole queue (tests/faults/test_kill_broker.py). Without it
        the store is saved every second and at a clean stop: rewriting the whole store for
        each message made tests that queue thousands of messages spend most of their time in
        the broker."""
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{listener_extra}"
            f"allow_anonymous {'false' if 'password_file' in listener_extra else 'true'}\n"
            # Started as root (CI), mosquitto would switch to its own user and then could not
            # write its persistence file in our temporary directory.
            "user root\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 1\n"
            f"autosave_on_changes {'true' if save_every_change else 'false'}\n"
            # Keep every message for an offline persistent session (the default drops past 1000).
            "max_queued_messages 0\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.workdir / "mosquitto.log").read_text(errors="replace")
                msg = f"mosquitto exited with {self.process.returncode}: {log[-2000:]}"
                raise RuntimeError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        msg = f"mosquitto did not listen on {self.port} within 10 s"
        raise RuntimeError(msg)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
