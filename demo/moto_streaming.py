"""Let the embedded moto complete multi-GiB multipart uploads without holding them in memory.

moto's ``CompleteMultipartUpload`` concatenates every part into one
``bytearray``, copies it to ``bytes`` and writes that into the new object:
a 2 GiB upload made the demo's process peak at 9.2 GiB. This replaces it,
for the demo's embedded server only, with the same checks (part numbers,
ETags, S3's minimum part size) and the same multipart ETag, but copies the
parts' buffers (moto spools them to temporary files) into the object's
buffer 16 MiB at a time. Uploads that ask S3 for additional checksums keep
moto's own code, which needs the bytes.

Downloads still read the whole object per request in moto (a limit of
the test server; see docs/demo.md).
"""

from __future__ import annotations

import hashlib
import shutil

from moto.s3 import models
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

CHUNK = 16 * 1024 * 1024
_original = models.S3Backend.complete_multipart_upload


def _complete_streaming(self, bucket_name: str, multipart_id: str, body):
    bucket = self.get_bucket(bucket_name)
    multipart = bucket.multiparts[multipart_id]
    if multipart.metadata.get("x-amz-checksum-algorithm"):
        return _original(self, bucket_name, multipart_id, body)
    parts, digests, last = [], bytearray(), None
    for number, etag in body:
        part = multipart.parts.get(number)
        if part is None or part.etag.strip('"') != etag.strip('"'):
            raise InvalidPart()
        if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        digests.extend(bytes.fromhex(part.etag.strip('"')))
        parts.append(part)
        last = part
    if not parts:
        raise MalformedXML()
    etag = f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"
    key = self.put_object(
        bucket_name, multipart.key_name, b"", storage=multipart.storage, etag=etag,
        encryption=multipart.sse_encryption, kms_key_id=multipart.kms_key_id,
    )
    with key.lock:
        target = key._value_buffer
        for part in parts:
            with part.lock:
                part._value_buffer.seek(0)
                shutil.copyfileobj(part._value_buffer, target, CHUNK)
        key.contentsize = target.tell()
    key._etag = etag  # put_object's empty value must not stand for the object
    key.set_metadata(multipart.metadata)
    self.put_object_tagging(key, multipart.tags)
    self.put_object_acl(bucket_name=bucket_name, key_name=key.name, acl=multipart.acl, disable_notification=True)
    del bucket.multiparts[multipart_id]  # closes the parts' buffers
    # moto answers a repeated complete from the object when its multipart has the same id.
    multipart.parts, multipart.partlist = {}, []
    key.multipart = multipart
    return key


def install() -> None:
    """Use the streaming completion in this process's moto (call before the server takes requests)."""
    models.S3Backend.complete_multipart_upload = _complete_streaming
