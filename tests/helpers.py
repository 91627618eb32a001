"""Test data: archives in every format AIStore reads, and the GetBatch tutorial's dataset."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from collections.abc import Iterable

import lz4.frame


def make_archive(members: Iterable[tuple[str, bytes]], fmt: str) -> bytes:
    """An archive of `members` in format fmt (.tar .tgz .tar.gz .zip .tar.lz4), names as given."""
    members = list(members)
    if fmt == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
        return buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if fmt in (".tgz", ".tar.gz"):
        import gzip

        return gzip.compress(raw)
    if fmt == ".tar.lz4":
        return lz4.frame.compress(raw)
    assert fmt == ".tar", fmt
    return raw


def tutorial_objects() -> dict[str, bytes]:
    return {f"test-obj-{i}": f"This is test object {i}\n".encode() for i in range(1, 6)}


def tutorial_archives() -> dict[str, dict[str, bytes]]:
    return {
        f"archive-{j}.tar": {
            f"file_{k}.txt": f"archive {j}, file {k}\n".encode() for k in range(1, 6)
        }
        for j in range(1, 4)
    }


def put_tutorial(objects_bucket, archives_bucket) -> None:
    """The GetBatch tutorial's data, put with the official SDK."""
    for name, data in tutorial_objects().items():
        objects_bucket.object(name).get_writer().put_content(data)
    for name, members in tutorial_archives().items():
        archives_bucket.object(name).get_writer().put_content(
            make_archive(members.items(), ".tar")
        )
