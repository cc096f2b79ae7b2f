"""A local stand-in for the public NSD bucket, for tests (only 127.0.0.1, no network).

:func:`local_nsd_bucket` starts moto's S3 server in a thread, creates the bucket
with a public-read policy like the real ``natural-scenes-dataset`` bucket's,
uploads a folder with each file's relative path as its key and yields the
endpoint URL. Code under test reads it anonymously (unsigned requests), exactly
as it reads AWS.

Faults are injected at the HTTP level by a WSGI layer in front of moto, so the
client sees what it would see from S3 on a bad day, through the real
botocore/urllib3 stack:

- :func:`drop_connection`: the server sends the full headers (Content-Length of
  the whole object) and then only ``after_bytes`` bytes of the body before the
  connection closes (werkzeug closes every connection after its response), so
  urllib3/botocore see a short body: the "connection reset mid-download" case.
- :func:`ignore_range`: the whole object despite a Range header (Range is
  optional in HTTP); :func:`corrupt_byte`: one byte of the body inverted.
- :func:`respond_with_error`: S3's error response (status, XML ``<Error>``),
  e.g. 403 AccessDenied for a key that is not publicly readable, or 503
  SlowDown to exercise botocore's own retries.
- :func:`put_object` with ``declared_size``: an object whose user metadata
  (``x-amz-meta-size``) declares another size than its body holds, as a
  truncated upload with a size manifest would look. (A real S3 object's
  Content-Length always equals its stored body, so "stored bytes shorter than
  expected" can only be seen against such a declaration.)

moto keeps its state per process, so the server is reset on entry and exit;
use one bucket at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

#: a public-read policy as on the real bucket (anonymous GetObject and ListBucket)
NSD_BUCKET_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "PublicGetObject", "Effect": "Allow", "Principal": "*",
         "Action": "s3:GetObject", "Resource": "arn:aws:s3:::{bucket}/*"},
        {"Sid": "PublicListBucket", "Effect": "Allow", "Principal": "*",
         "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::{bucket}"},
    ],
}

# moto checks an unsigned HEAD against the made-up action "s3:HeadObject" (AWS
# checks s3:GetObject), which a policy AWS would accept cannot grant; a
# public-read ACL on each object lets moto answer anonymous HEADs as AWS does.
_OBJECT_ACL = "public-read"

# moto accepts any signature; these only exist so the *uploading* client signs.
_DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class _Fault:
    methods: tuple[str, ...]
    times: int | None            # None: every matching request
    after_bytes: int | None = None
    status: int | None = None
    code: str = ""
    ignore_range: bool = False
    flip_byte_at: int | None = None
    then: Callable[[], None] | None = None


@dataclass
class _FaultInjector:
    """WSGI middleware: applies the registered faults to requests for ``/<bucket>/<key>``."""

    app: object
    bucket: str
    faults: dict[str, list[_Fault]] = field(default_factory=dict)
    #: (method, key, headers) of every request for an object, in arrival order
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        prefix = f"/{self.bucket}/"
        path = environ.get("PATH_INFO", "")
        if not path.startswith(prefix):
            return self.app(environ, start_response)
        key = path[len(prefix):]
        headers = {k[5:].replace("_", "-").lower(): v
                   for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            self.seen.append((method, key, headers))
            fault = self._take(key, method)
        if fault is None:
            return self.app(environ, start_response)
        if fault.status is not None:
            return _error_response(start_response, method, fault, key)
        if fault.ignore_range:
            environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
            return self.app(environ, start_response)
        if fault.flip_byte_at is not None:
            return _flip_byte(self.app(environ, start_response), fault.flip_byte_at)
        return _cut_body(self.app(environ, start_response), fault.after_bytes, fault.then)

    def _take(self, key: str, method: str) -> _Fault | None:
        for fault in self.faults.get(key, []):
            if method in fault.methods and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None


def _cut_body(body, after_bytes: int, then: Callable[[], None] | None = None):
    """Yield the first ``after_bytes`` bytes of a WSGI body, then stop (the server closes).

    ``then`` runs before the last bytes go out, so it has finished when the
    client sees the cut.
    """
    sent = 0
    try:
        for chunk in body:
            if sent + len(chunk) >= after_bytes:
                if then is not None:
                    then()
                yield chunk[: after_bytes - sent]
                return
            sent += len(chunk)
            yield chunk
    finally:
        if hasattr(body, "close"):
            body.close()


def _flip_byte(body, position: int):
    """Yield a WSGI body with the byte at ``position`` inverted (a corrupting proxy)."""
    start = 0
    try:
        for chunk in body:
            if start <= position < start + len(chunk):
                i = position - start
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            start += len(chunk)
            yield chunk
    finally:
        if hasattr(body, "close"):
            body.close()


def _error_response(start_response, method: str, fault: _Fault, key: str):
    reason = {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(fault.status, "Error")
    body = b"" if method == "HEAD" else (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
        f"<Message>{fault.code}</Message><Key>{key}</Key></Error>").encode()
    start_response(f"{fault.status} {reason}",
                   [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


@dataclass
class _Server:
    endpoint_url: str
    bucket: str
    injector: _FaultInjector


_SERVERS: dict[str, _Server] = {}


def _server(endpoint_url: str) -> _Server:
    try:
        return _SERVERS[endpoint_url]
    except KeyError:
        raise ValueError(f"{endpoint_url}: no local_nsd_bucket is running there") from None


def signed_client(endpoint_url: str):
    """A boto3 S3 client with dummy credentials, for writing to the local server only."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        # Like objects uploaded before S3 stored CRC checksums by default (NSD's
        # date from 2021), these carry only the ETag (body MD5 if single-part).
        config=Config(retries={"mode": "standard", "max_attempts": 2},
                      request_checksum_calculation="when_required"),
        **_DUMMY_CREDENTIALS)


def _reset_moto(endpoint_url: str) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextlib.contextmanager
def local_nsd_bucket(source_root: str | Path | None,
                     bucket: str = "natural-scenes-dataset") -> Iterator[str]:
    """Serve ``source_root`` as a public S3 bucket on 127.0.0.1; yield the endpoint URL.

    Every file under ``source_root`` becomes the object whose key is its path
    relative to ``source_root`` (``/`` separators). ``None`` gives an empty bucket.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint_url = None
    try:
        # ThreadedMotoServer has no hook for middleware; its werkzeug server
        # reads ``.app`` per request, so wrapping it there is enough.
        wsgi_server = server._server
        injector = _FaultInjector(app=wsgi_server.app, bucket=bucket)
        wsgi_server.app = injector
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        _reset_moto(endpoint_url)
        _SERVERS[endpoint_url] = _Server(endpoint_url, bucket, injector)

        client = signed_client(endpoint_url)
        client.create_bucket(Bucket=bucket)
        policy = json.dumps(NSD_BUCKET_POLICY).replace("{bucket}", bucket)
        client.put_bucket_policy(Bucket=bucket, Policy=policy)
        if source_root is not None:
            root = Path(source_root)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, path.relative_to(root).as_posix(),
                                   ExtraArgs={"ACL": _OBJECT_ACL})
        yield endpoint_url
    finally:
        if endpoint_url is not None:
            with contextlib.suppress(OSError):
                _reset_moto(endpoint_url)
            _SERVERS.pop(endpoint_url, None)
        server.stop()


def _add_fault(endpoint_url: str, key: str, fault: _Fault) -> None:
    srv = _server(endpoint_url)
    with srv.injector.lock:
        srv.injector.faults.setdefault(key, []).append(fault)


def put_object(endpoint_url: str, key: str, body: bytes, *,
               declared_size: int | None = None, crc32: bool = False) -> None:
    """Store ``body`` under ``key``.

    ``declared_size`` sets the ``x-amz-meta-size`` user metadata; ``crc32``
    stores S3's CRC32 checksum with the object (returned and checked on GET).
    """
    srv = _server(endpoint_url)
    extra = {"ChecksumAlgorithm": "CRC32"} if crc32 else {}
    if declared_size is not None:
        extra["Metadata"] = {"size": str(declared_size)}
    signed_client(endpoint_url).put_object(Bucket=srv.bucket, Key=key, Body=body,
                                           ACL=_OBJECT_ACL, **extra)


def drop_connection(endpoint_url: str, key: str, after_bytes: int, times: int | None = 1,
                    then: Callable[[], None] | None = None) -> None:
    """Cut the next ``times`` GET bodies of ``key`` after ``after_bytes`` bytes (None: all).

    ``then`` (e.g. replacing the object) runs at each cut, before the client sees it.
    """
    _add_fault(endpoint_url, key, _Fault(methods=("GET",), times=times,
                                         after_bytes=after_bytes, then=then))


def ignore_range(endpoint_url: str, key: str, times: int | None = 1) -> None:
    """Serve the next ``times`` GETs of ``key`` whole, as a server without Range support."""
    _add_fault(endpoint_url, key, _Fault(methods=("GET",), times=times, ignore_range=True))


def corrupt_byte(endpoint_url: str, key: str, position: int, times: int | None = 1) -> None:
    """Invert byte ``position`` of the next ``times`` GET bodies of ``key``."""
    _add_fault(endpoint_url, key, _Fault(methods=("GET",), times=times, flip_byte_at=position))


def respond_with_error(endpoint_url: str, key: str, status: int, code: str, *,
                       times: int | None = None,
                       methods: tuple[str, ...] = ("HEAD", "GET")) -> None:
    """Answer the next ``times`` requests for ``key`` with S3 error ``code`` (None: all)."""
    _add_fault(endpoint_url, key,
               _Fault(methods=tuple(methods), times=times, status=status, code=code))


def requests_seen(endpoint_url: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, key, lower-cased request headers) of every object request so far."""
    srv = _server(endpoint_url)
    with srv.injector.lock:
        return list(srv.injector.seen)
