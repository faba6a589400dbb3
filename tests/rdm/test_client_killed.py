"""``kill -9`` of ``oarepo-s3 upload --files-url`` mid-upload, then a resume that sends only what S3 lacks.

The app signs its part links for a fault proxy in front of S3 (as the client
tests do), which holds S3's answer to part 4: the client is killed while it
waits for that answer, with parts 1 to 4 in S3 but only 1 to 3 in its
journal. No timing decides where the kill lands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..proxied_s3 import app_config, module_proxy  # noqa: F401 (fixtures: part links signed for the proxy)
from .test_client import PART, _file, files_url, make_uploader  # noqa: F401 (fixtures)


def test_kill_9_then_resume_sends_only_what_s3_lacks(files_url, make_uploader, tmp_path, rdm, record,  # noqa: F811
                                                     module_proxy):  # noqa: F811
    module_proxy.reset()
    path = _file(tmp_path, "killed.bin", 8 * PART)
    held = module_proxy.add_fault("hold", part=4)
    process = subprocess.Popen(
        [sys.executable, "-m", "oarepo_s3_client", "upload", str(path), "--files-url", files_url, "--json",
         "--concurrency", "1", "--part-size", str(PART), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"OAREPO_S3_TOKEN": "any", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert held.reached.wait(120), "part 4 never reached S3"
    finally:
        os.kill(process.pid, signal.SIGKILL)  # while it waits for S3's answer to part 4
        process.wait()
        held.release.set()
    module_proxy.wait_idle()
    stored = sorted(e.part for e in module_proxy.part_puts(200))
    assert stored == [1, 2, 3, 4]  # one part at a time, in order: the kill came while part 4 was answered
    module_proxy.clear_log()

    uploader, log = make_uploader(concurrency=2)
    result = uploader.upload(path)

    assert sorted(n for n, _ in log.puts) == [5, 6, 7, 8]  # part 4 is in S3: checked by its MD5, not sent
    assert (result.parts_sent, result.parts_reused) == (4, 4)
    assert rdm.content(record.pid, "killed.bin").content == path.read_bytes()
