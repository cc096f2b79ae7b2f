"""Reading NSD keys where they are, a few bytes at a time: a local mirror or the bucket.

Labs often hold NSD on shared storage already (``nsd.source: local``); the
workflow reads it in place, without copying. ``rest2visual check-nsd``
(:mod:`rest2visual.nsd.check`) inspects every needed key before any compute,
and must stay cheap on 150 GB of data: it reads NIfTI headers and gzip
trailers, not volumes. The two stores below give it the same three questions
for a folder and for an S3 bucket:

- ``size(key)``: bytes of the object, or None when it does not exist;
- ``read(key, start, length)``: a byte range (S3: one ranged GET);
- ``local_path(key)``: the file, where the store is a folder (else None);
- ``open(key)``: a seekable binary file whose reads are byte ranges (for h5py,
  which reads only the HDF5 metadata it needs).

On S3, requests are anonymous (the client of :mod:`rest2visual.nsd.download`)
and every GET carries a ``Range`` header; :attr:`S3Store.bytes_read` counts the
body bytes received, so a test can show that no object was downloaded whole.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from rest2visual.checks import InputError


class LocalStore:
    """NSD keys under a folder (a mirror, or the workflow's download folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.where = f"local folder {self.root}"

    def path(self, key: str) -> Path:
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        """The key's file (None: the store is not local)."""
        return self.path(key)

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size if self.path(key).is_file() else None
        except OSError:
            return None

    def read(self, key: str, start: int, length: int) -> bytes:
        with open(self.path(key), "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def open(self, key: str):
        return open(self.path(key), "rb")


class S3Store:
    """NSD keys in an S3 bucket, read anonymously by HEAD and ranged GET only.

    ``bytes_read`` counts the body bytes received (all threads), ``requests``
    the HEAD and GET requests sent.
    """

    #: concurrent requests the client is sized for (check-nsd's thread pool)
    CONNECTIONS = 16

    def __init__(self, bucket: str, endpoint_url: str | None = None, client=None) -> None:
        from rest2visual.nsd.download import anonymous_s3_client

        self.bucket, self.endpoint_url = bucket, endpoint_url
        self.client = client or anonymous_s3_client(
            endpoint_url, max_attempts=3, max_pool_connections=self.CONNECTIONS)
        self.where = f"s3://{bucket}" + (f" at {endpoint_url}" if endpoint_url else "")
        self.bytes_read = 0
        self.requests = 0
        self._heads: dict[str, dict | None] = {}
        self._lock = threading.Lock()

    def _count(self, n_bytes: int) -> None:
        with self._lock:
            self.bytes_read += n_bytes
            self.requests += 1

    def head(self, key: str) -> dict | None:
        """The object's HEAD response, None when the key does not exist (cached)."""
        from botocore.exceptions import ClientError

        from rest2visual.nsd.download import NSDKeyError, _request_error

        if key not in self._heads:
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                error = _request_error(exc, key, self.bucket, self.endpoint_url, "")
                if isinstance(error, NSDKeyError):
                    head = None
                elif isinstance(error, InputError):
                    raise error from exc
                else:
                    raise InputError(f"{key}: HEAD request to {self.where} failed ({exc})") \
                        from exc
            finally:
                self._count(0)
            self._heads[key] = head
        return self._heads[key]

    def size(self, key: str) -> int | None:
        head = self.head(key)
        return None if head is None else int(head["ContentLength"])

    def local_path(self, key: str) -> None:
        return None

    def declared_size(self, key: str) -> int | None:
        """Size the object declares in ``x-amz-meta-size`` (see :mod:`.download`), if any."""
        head = self.head(key) or {}
        value = (head.get("Metadata") or {}).get("size")
        return int(value) if value is not None and value.strip().isdigit() else None

    def read(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        response = self.client.get_object(Bucket=self.bucket, Key=key,
                                          Range=f"bytes={start}-{start + length - 1}")
        if response.get("ContentRange") is None and response.get("ContentLength", 0) > length:
            response["Body"].close()  # the whole object is coming: do not read it
            raise InputError(f"{key}: {self.where} ignored the byte range asked for (bytes "
                             f"{start}-{start + length - 1}); a header check would download "
                             "the whole object")
        body = response["Body"].read()
        self._count(len(body))
        return body

    def open(self, key: str):
        size = self.size(key)
        if size is None:
            raise InputError(f"{key}: no such key in {self.where}")
        return io.BufferedReader(_RangedRaw(self, key, size), buffer_size=64 * 1024)


class _RangedRaw(io.RawIOBase):
    """A read-only, seekable raw file over one object whose reads are ranged GETs."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.read(self._key, self._pos, n)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


class DownloadedOrS3Store:
    """``nsd.source: s3``: a key already downloaded is read locally, the others on S3."""

    def __init__(self, download_dir: str | Path, s3: S3Store) -> None:
        self.local, self.s3 = LocalStore(download_dir), s3
        self.where = f"{s3.where} (keys already in {self.local.root} read there)"

    def _for(self, key: str):
        return self.local if self.local.path(key).is_file() else self.s3

    def size(self, key: str) -> int | None:
        return self._for(key).size(key)

    def local_path(self, key: str) -> Path | None:
        return self._for(key).local_path(key)

    def read(self, key: str, start: int, length: int) -> bytes:
        return self._for(key).read(key, start, length)

    def open(self, key: str):
        return self._for(key).open(key)
