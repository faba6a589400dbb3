"""The S3 tools the client benchmark compares ``oarepo-s3`` with: how each one uploads and downloads a file.

Every tool gets the same file, part size and parts in flight, and its own S3
keys (a user of its own on Ceph, see :meth:`common.S3Server.new_user`) in
its environment; each runs as a subprocess, so its CPU time is its own.

* ``aws-cli``   - ``aws s3 cp`` (awscli v1, s3transfer): ``multipart_chunksize`` and
  ``max_concurrent_requests`` in its config file, checksums ``when_required``;
* ``boto3``     - ``client.upload_file`` / ``download_file`` with the same ``TransferConfig``;
* ``boto3-crt`` - boto3's AWS CRT transfer manager (``s3transfer.crt.CRTTransferManager``,
  the C client of ``boto3[crt]`` and aws-cli v2; awscrt on this child's path only, see
  :data:`CRT_DIR`): boto3 itself turns it on only on instance types AWS lists and only for
  AWS endpoints, so it is built here as aws-cli v2 builds it, with the part size and the
  connection count set; it always sends every part's CRC32, in a header here (Ceph RGW 16
  refuses the aws-chunked trailer the CRT puts it in);
* ``s5cmd``     - ``s5cmd cp --part-size --concurrency`` (Go, aws-sdk-go);
* ``rclone``    - ``rclone copyto`` with ``--s3-chunk-size``/``--s3-upload-concurrency`` up and
  ``--multi-thread-streams``/``--multi-thread-chunk-size`` down (Go; its default integrity
  checks kept: Content-MD5 of every part and the file's MD5 in the object's metadata).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common import REGION, ROOT, MiB

BIN = Path(sys.executable).parent
CRT_DIR = Path(sys.prefix) / "bench-crt"
"""awscrt for the ``boto3-crt`` child alone (``requirements/bench-crt.txt``): in the venv itself it would
switch botocore to its CRT signer for everything, the tests' byte-for-byte presigning checks included."""


def ensure_crt() -> Path:
    """Install ``requirements/bench-crt.txt`` into :data:`CRT_DIR` once (uv, seconds); its path."""
    wanted = (ROOT / "requirements" / "bench-crt.txt").read_text()
    stamp = CRT_DIR / ".requirements"
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([str(BIN / "uv"), "pip", "install", "--quiet", "-p", sys.executable, "--target", str(CRT_DIR),
                        "--no-deps", "-r", str(ROOT / "requirements" / "bench-crt.txt")], check=True)
        stamp.write_text(wanted)
    return CRT_DIR

BOTO3_CHILD = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
direction, path, endpoint, bucket, key, part, concurrency = sys.argv[1:8]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(
    signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=int(concurrency),
    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
config = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
                        max_concurrency=int(concurrency), use_threads=True, preferred_transfer_client="classic")
if direction == "up":
    client.upload_file(path, bucket, key, Config=config)
else:
    client.download_file(bucket, key, path, Config=config)
"""

BOTO3_CRT_CHILD = """
import sys
import botocore.session
from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
from awscrt.s3 import S3Client, S3RequestTlsMode
from botocore.config import Config
from s3transfer.crt import BotocoreCRTCredentialsWrapper, BotocoreCRTRequestSerializer, CRTTransferManager
from s3transfer.crt import S3ClientArgsCreator
import awscrt.s3
# The CRT sends each part's CRC32 in an aws-chunked trailer, which Ceph RGW 16 refuses
# (XAmzContentSHA256Mismatch): the same CRC32, in a header instead.
put_object_args = S3ClientArgsCreator._get_make_request_args_put_object
def crc32_in_a_header(self, *args, **kwargs):
    made = put_object_args(self, *args, **kwargs)
    if made.get("checksum_config") is not None:
        made["checksum_config"] = awscrt.s3.S3ChecksumConfig(
            algorithm=awscrt.s3.S3ChecksumAlgorithm.CRC32, location=awscrt.s3.S3ChecksumLocation.HEADER)
    return made
S3ClientArgsCreator._get_make_request_args_put_object = crc32_in_a_header
direction, path, endpoint, bucket, key, part, concurrency = sys.argv[1:8]
session = botocore.session.Session()
events = EventLoopGroup()
crt = S3Client(
    bootstrap=ClientBootstrap(events, DefaultHostResolver(events)), region="us-east-1",
    credential_provider=BotocoreCRTCredentialsWrapper(session.get_credentials()).to_crt_credentials_provider(),
    part_size=int(part), multipart_upload_threshold=int(part), tls_mode=S3RequestTlsMode.DISABLED,
    max_active_connections_override=int(concurrency))
serializer = BotocoreCRTRequestSerializer(session, {
    "endpoint_url": endpoint, "region_name": "us-east-1",
    "config": Config(signature_version="s3v4", s3={"addressing_style": "path"})})
with CRTTransferManager(crt, serializer) as manager:
    if direction == "up":
        manager.upload(path, bucket, key).result()
    else:
        manager.download(bucket, key, path).result()
"""


@dataclass
class S3Tool:
    """One tool: its command lines for an upload and a download, and the environment with its keys."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    part_size: int
    concurrency: int
    workdir: Path

    def env(self) -> dict[str, str]:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
               "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_CONFIG_FILE": str(self._aws_config()), "RCLONE_CONFIG": "/dev/null"}
        if self.name == "boto3-crt":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ensure_crt()), env.get("PYTHONPATH")]))
        if self.name == "rclone":  # its on-the-fly ":s3:" remote, configured by environment variables
            env.update(RCLONE_S3_PROVIDER="Ceph", RCLONE_S3_ENV_AUTH="false", RCLONE_S3_ACCESS_KEY_ID=self.access_key,
                       RCLONE_S3_SECRET_ACCESS_KEY=self.secret_key, RCLONE_S3_ENDPOINT=self.endpoint,
                       RCLONE_S3_REGION=REGION)
        env.pop("AWS_PROFILE", None)
        return env

    def upload(self, path: Path, bucket: str, key: str) -> list[str]:
        return self._command("up", str(path), f"{bucket}/{key}")

    def download(self, bucket: str, key: str, path: Path) -> list[str]:
        return self._command("down", f"{bucket}/{key}", str(path))

    def _command(self, direction: str, source: str, target: str) -> list[str]:
        remote, local = (target, source) if direction == "up" else (source, target)
        bucket, key = remote.split("/", 1)
        part, conc = self.part_size, self.concurrency
        if self.name == "aws-cli":
            ends = [local, f"s3://{remote}"] if direction == "up" else [f"s3://{remote}", local]
            return [str(BIN / "aws"), "s3", "cp", *ends, "--endpoint-url", self.endpoint, "--only-show-errors"]
        if self.name in ("boto3", "boto3-crt"):
            child = BOTO3_CHILD if self.name == "boto3" else BOTO3_CRT_CHILD
            return [sys.executable, "-c", child, direction, local, self.endpoint, bucket, key, str(part), str(conc)]
        if self.name == "s5cmd":
            ends = [local, f"s3://{remote}"] if direction == "up" else [f"s3://{remote}", local]
            return [str(BIN / "s5cmd"), "--endpoint-url", self.endpoint, "cp", "--part-size",
                    str(max(1, part // MiB)), "--concurrency", str(conc), *ends]
        if self.name == "rclone":
            ends = [local, f":s3:{remote}"] if direction == "up" else [f":s3:{remote}", local]
            tuning = (["--s3-chunk-size", f"{part}B", "--s3-upload-cutoff", f"{part}B", "--s3-upload-concurrency",
                       str(conc)] if direction == "up" else
                      ["--multi-thread-streams", str(conc), "--multi-thread-chunk-size", f"{part}B",
                       "--multi-thread-cutoff", f"{part}B"])
            return [str(BIN / "rclone"), "copyto", *ends, *tuning, "--no-check-dest", "-q"]
        raise ValueError(f"unknown S3 tool {self.name}")

    def _aws_config(self) -> Path:
        path = self.workdir / f"aws-config-{self.name}"
        if not path.exists():
            path.write_text(
                f"[default]\nregion = {REGION}\nrequest_checksum_calculation = when_required\n"
                f"response_checksum_validation = when_required\ns3 =\n  multipart_threshold = {self.part_size}\n"
                f"  multipart_chunksize = {self.part_size}\n  max_concurrent_requests = {self.concurrency}\n"
                "  addressing_style = path\n")
        return path


TOOLS = ("aws-cli", "boto3", "boto3-crt", "s5cmd", "rclone")
DOWNLOAD_CHECKS = {
    "boto3-crt": "checks a CRC32 only where S3 stored one (Ceph RGW 16 stores none)",
    "rclone": "checks the file's MD5 too (from the metadata it stored on upload)",
}
"""What each tool checks of a download's bytes beyond their length (the others: nothing, as configured here)."""
