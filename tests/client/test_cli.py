"""The ``oarepo-s3`` command in a subprocess: directories, --json, exit codes, Ctrl-C and kill -9."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time

import pytest

from .conftest import CLIENT_SRC, MiB, cli_command, run_cli
from .test_upload import file_s3etag


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_directory_upload_with_json_output_then_rerun_skips(make_file, tmp_path, draft_url, owner, proxy, state_dir):
    folder = tmp_path / "dataset"
    files = {
        "a.txt": make_file("a.txt", 10, folder),
        "sub/b.bin": make_file("b.bin", 11 * MiB, folder / "sub"),
        "sub/deeper/c.bin": make_file("c.bin", 6 * MiB, folder / "sub" / "deeper"),
    }
    args = ("upload", str(folder), "--draft", draft_url, "--json", "--part-size", "5MiB", "--concurrency", "4",
            "--state-dir", str(state_dir))
    done = run_cli(*args, token=owner.token)
    assert done.returncode == 0, done.stderr
    results = {r["key"]: r for r in json_lines(done.stdout)}
    assert set(results) == set(files)
    for key, path in files.items():
        r = results[key]
        assert r["status"] == "completed" and r["size"] == path.stat().st_size and r["exit_code"] == 0
        assert r["checksum"] == file_s3etag(path, 5 * MiB)
        assert r["content_url"].endswith(f"/files/{key}/content") and r["url"].endswith(f"/files/{key}")
        assert owner.api().get(r["content_url"], timeout=60).content == path.read_bytes()
    listing = owner.api().get(f"{draft_url}/files/", timeout=30).json()["entries"]
    assert sorted(f["key"] for f in listing) == sorted(files)
    assert list(state_dir.iterdir()) == []  # journals go away once files are complete

    proxy.clear_log()
    again = run_cli(*args, token=owner.token)
    assert again.returncode == 0, again.stderr
    assert {r["key"]: r["status"] for r in json_lines(again.stdout)} == dict.fromkeys(files, "skipped")
    assert proxy.part_puts() == []


def test_text_output_prints_each_files_url(make_file, draft_url, owner):
    path = make_file("one.bin", 5 * MiB + 3)
    done = run_cli("upload", str(path), "--draft", draft_url, "--part-size", "5MiB", token=owner.token)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed  ") and f"{draft_url}/files/one.bin/content" in done.stdout


def test_help_documents_the_exit_codes():
    done = run_cli("upload", "--help")
    assert done.returncode == 0
    for line in ("0    every file", "1    some file failed", "2    usage", "3    authentication",
                 "4    integrity mismatch", "130  interrupted"):
        assert line in done.stdout
    assert "Memory: about N x 1 MiB, whatever the part size" in " ".join(done.stdout.split())  # wrapped


def test_exit_codes(make_file, tmp_path, draft_url, owner, users, proxy):
    path = make_file("x.bin", 5 * MiB + 1)
    base = ("upload", str(path), "--draft", draft_url, "--json", "--part-size", "5MiB",
            "--state-dir", str(tmp_path / "s"))
    assert run_cli(*base).returncode == 2  # no token
    assert run_cli("upload", str(tmp_path / "missing"), "--draft", draft_url, token=owner.token).returncode == 2
    assert run_cli(*base[:-2], "--part-size", "1MiB", token=owner.token).returncode == 2
    wrong = run_cli(*base, token="not-a-token")
    assert wrong.returncode == 3 and json_lines(wrong.stdout)[0]["exit_code"] == 3
    assert run_cli(*base, token=users["other"].token).returncode == 3  # not the draft's owner

    proxy.add_fault("error503", part=1, times=100)
    failed = run_cli(*base, "--retries", "2", token=owner.token)
    assert failed.returncode == 1
    line = json_lines(failed.stdout)[0]
    assert line["status"] == "failed" and "503" in line["error"] and line["exit_code"] == 1

    proxy.reset()
    proxy.add_fault("fake_etag", method="HEAD")
    mismatch = run_cli(*base, token=owner.token)
    assert mismatch.returncode == 4, mismatch.stderr
    assert json_lines(mismatch.stdout)[0]["exit_code"] == 4


def interruptible() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_the_next_run_resumes(make_file, draft_url, owner, proxy, state_dir):
    path = make_file("ctrlc.bin", 6 * 5 * MiB)
    args = ("upload", str(path), "--draft", draft_url, "--json", "--part-size", "5MiB", "--concurrency", "2",
            "--state-dir", str(state_dir))
    slow = proxy.slow_parts(0.3)
    env = {"OAREPO_S3_TOKEN": owner.token, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(CLIENT_SRC)}
    # As a terminal would: the child gets SIGINT's default disposition even when this suite runs
    # in the background or under nohup, where SIGINT is ignored and children inherit that.
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while not proxy.part_puts(200) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "run the same command again to resume" in err
    proxy.wait_idle()
    proxy.remove(slow)
    # Parts S3 holds: those sent, and on moto the one the SHA-256 probe sent (the real bytes; kept after an MD5 check).
    held = {e.part for e in proxy.part_puts(200)} | {e.part for e in proxy.probes() if e.status == 200}
    proxy.clear_log()

    again = run_cli(*args, token=owner.token)
    assert again.returncode == 0, again.stderr
    result = json_lines(again.stdout)[0]
    assert result["resumed"] and result["parts_reused"] == len(held)
    assert sorted(e.part for e in proxy.part_puts()) == sorted(set(range(1, 7)) - held)


@pytest.mark.slow
def test_kill_9_at_half_then_resume_sends_only_the_missing_parts(make_file, draft_url, owner, proxy, state_dir):
    """The issue's scenario: 200 MiB, kill -9 at about half, run again: only unfinished parts are sent."""
    path = make_file("big.bin", 200 * MiB)
    parts = 40
    args = ("upload", str(path), "--draft", draft_url, "--json", "--part-size", "5MiB", "--concurrency", "4",
            "--state-dir", str(state_dir))
    slow = proxy.slow_parts(0.05)
    env = {"OAREPO_S3_TOKEN": owner.token, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(CLIENT_SRC)}
    process = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 90

    def journal_lines() -> int:
        journals = list(state_dir.glob("upload-*.jsonl")) if state_dir.exists() else []
        return len(journals[0].read_bytes().splitlines()) - 1 if journals else 0

    while journal_lines() < parts // 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.kill()  # SIGKILL: no cleanup at all
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    proxy.wait_idle()
    proxy.remove(slow)
    listing = owner.api().get(f"{draft_url}/files/big.bin", timeout=30).json()
    held = {p["PartNumber"] for p in owner.api().get(listing["links"]["multipart"], timeout=30).json()["parts"]}
    assert parts // 4 <= len(held) < parts, f"killed at {len(held)} of {parts} parts"
    proxy.clear_log()

    again = run_cli(*args, token=owner.token, timeout=300)
    assert again.returncode == 0, again.stderr
    result = json_lines(again.stdout)[0]
    resent = sorted(e.part for e in proxy.part_puts())
    assert resent == sorted(set(range(1, parts + 1)) - held)  # each unfinished part once, no finished one
    assert (result["parts_sent"], result["parts_reused"], result["resumed"]) == (len(resent), len(held), True)
    downloaded = owner.api().get(result["content_url"], timeout=120).content
    assert sha256(downloaded) == sha256(path.read_bytes())
