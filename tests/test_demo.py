"""The demo as a newcomer runs it: start it, upload with the printed command, stop it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def demo(tmp_path):
    info_file = tmp_path / "info.json"
    port, s3_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--port", str(port), "--s3-port", str(s3_port),
         "--data-dir", str(tmp_path / "data"), "--info-file", str(info_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while not info_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the demo did not start:\n{process.stdout.read()}")
        time.sleep(0.2)
    yield json.loads(info_file.read_text()), process, port
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the demo did not stop on Ctrl-C")


def test_demo_upload_round_trip(demo):
    info, process, _ = demo
    assert set(info) >= {"url", "s3_endpoint", "user", "password", "token", "draft_id",
                         "other_user", "other_password", "other_token"}
    example = subprocess.run(
        [sys.executable, "-m", "demo.example", "--draft", info["draft_url"], "--token", info["token"],
         "--size-mib", "12"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert example.returncode == 0, example.stdout + example.stderr
    assert "bytes identical: True" in example.stdout
    # The second user may not touch the first user's draft.
    other = requests.get(info["draft_url"], headers={"Authorization": f"Bearer {info['other_token']}"}, timeout=30)
    assert other.status_code == 403


def test_busy_port_gets_a_clear_message(demo, tmp_path):
    _, _, port = demo
    busy = subprocess.run([sys.executable, "-m", "demo", "--port", str(port), "--data-dir", str(tmp_path / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and f"port {port} is busy" in busy.stderr
