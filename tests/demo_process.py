"""The demo as a newcomer runs it: ``python -m demo`` in a subprocess, on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120
"""Seconds the demo may take to start (a deadline for a hung start, not a performance bound)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoProcess:
    """One ``python -m demo`` process; :meth:`start` waits for its info file, :meth:`stop` sends Ctrl-C."""

    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None, port: int | None = None,
                 s3_port: int | None = None):
        self.data_dir = data_dir
        self.info_file = data_dir.parent / f"{data_dir.name}-info.json"
        self.port = port or free_port()
        self.s3_port = s3_port or free_port()
        self.args = [sys.executable, "-m", "demo", "--port", str(self.port), "--s3-port", str(self.s3_port),
                     "--data-dir", str(data_dir), "--info-file", str(self.info_file), *extra]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.output = ""

    def start(self) -> dict:
        self.info_file.unlink(missing_ok=True)
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._log = open(log, "w+")  # a file, not a pipe: a full pipe would block the demo
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.info_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the demo did not start:\n{self.read_output()}", pytrace=False)
            time.sleep(0.2)
        self.info = json.loads(self.info_file.read_text())
        return self.info

    def read_output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self, sig=signal.SIGINT, timeout: float = 60) -> int:
        """Stop like Ctrl-C; return the exit code (fails the test if the demo does not stop)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the demo did not stop on signal {sig}:\n{self.read_output()}", pytrace=False)
        self.output = self.read_output()
        self._log.close()
        return code
