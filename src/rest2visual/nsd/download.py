"""Download NSD objects from S3 anonymously, verified, atomically, one key per call.

``rest2visual download KEY DEST`` fetches ``s3://natural-scenes-dataset/KEY``
(or the same key from another S3 endpoint, e.g. a mirror or the local test
server) into ``DEST`` (the workflow uses ``resources/nsd/KEY``). Snakemake runs
one job per key and skips keys whose file exists.

Integrity: a HEAD gives the object's size (Content-Length) and ETag. The body
is streamed into a temporary sibling (:func:`rest2visual.atomic.atomic_path`),
every GET carries ``If-Match: <ETag>`` so the bytes cannot come from two
versions of the object, and the file is renamed to ``DEST`` only when its
byte count equals the size (and the ``x-amz-meta-size`` user metadata, where
an object declares one) and, for single-part uploads whose ETag is the body's
MD5, the MD5 matches; objects that store an S3 CRC checksum are also checked
by botocore on whole-object GETs. Nothing short, corrupt or mixed ever sits
under ``DEST``.

Retries: botocore retries failed requests (``standard`` mode: 5xx, throttling,
connection errors before a response). A connection that breaks *inside* the
body (IncompleteRead, reset, read timeout) is retried here with exponential
backoff, resuming with ``Range: bytes=N-`` from the N bytes already written to
the temporary file, so a dropped 2 GB betas file does not start over. Resume
is in-process only: a killed job leaves no partial file (``atomic_path``
removes it, or it is a hidden ``.name.tmp-<pid>-*`` sibling if SIGKILLed) and
the next run starts from zero. A stable ``.part`` name would let a re-run
continue too, but it breaks the one rule every stage follows (write through
``atomic_path``), needs locking against two runs and a policy for stale parts;
one lost file per killed job is the cheaper price.

Why boto3 and not Snakemake's S3 storage plugin: checked against the source of
snakemake-storage-plugin-s3 (GitHub snakemake/snakemake-storage-plugin-s3,
``snakemake_storage_plugin_s3/__init__.py``). Its provider always builds a
signed ``boto3.resource("s3", aws_access_key_id=..., ...)``; in v0.2.0 its
settings raise ``WorkflowError("... no access key provided")`` when no
credentials are found, and later versions (read at v0.3.x) drop that check but
expose ``signature_version`` only as a string setting passed to
``Config(signature_version=...)``, while anonymous access needs the
``botocore.UNSIGNED`` sentinel (no string in botocore's ``AUTH_TYPE_MAPS``
means "unsigned"). So without AWS credentials it cannot read a public bucket
(no ``--no-sign-request`` equivalent). It also stores objects under
``.snakemake/storage/<bucket>/<key>`` rather than ``resources/nsd/<key>``, and
it cannot say which subject/session needed a missing key, nor check sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import re
import sys
import time
from pathlib import Path

from rest2visual.atomic import atomic_path
from rest2visual.checks import InputError
from rest2visual.nsd.keys import BUCKET

log = logging.getLogger(__name__)

REGION = "us-east-1"
#: bytes read from the response stream per write
CHUNK_BYTES = 8 * 1024 * 1024
#: user-metadata field (``x-amz-meta-size``) in which an object may declare its size
SIZE_METADATA = "size"
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


class NSDKeyError(InputError):
    """The key (or the bucket) does not exist at the endpoint."""


class NSDAccessError(InputError):
    """The endpoint refused an anonymous read (403 AccessDenied)."""


class NSDIntegrityError(InputError):
    """The object's bytes disagree with its declared size or checksum, or it changed."""


class NSDTransferError(OSError):
    """The transfer kept failing; the message gives bytes received and expected."""


def anonymous_s3_client(endpoint_url: str | None = None, *, max_attempts: int = 5,
                        read_timeout_s: float = 60.0, max_pool_connections: int = 10):
    """An unsigned (anonymous) boto3 S3 client; ``endpoint_url=None`` means AWS.

    No credentials are looked up (botocore skips the credential chain and
    instance metadata for ``UNSIGNED`` clients). ``max_pool_connections``: the
    most concurrent requests (threads) the client serves without reconnecting.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=UNSIGNED,
        region_name=REGION,
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _where(bucket: str, endpoint_url: str | None) -> str:
    return f"bucket {bucket!r} at {endpoint_url or f'AWS S3 ({REGION})'}"


def _needed(needed_by: str) -> str:
    return f" (needed by {needed_by})" if needed_by else ""


def _raise_request_error(exc, key: str, bucket: str, endpoint_url: str | None,
                         needed_by: str):
    """Re-raise a botocore ClientError as the error a user can act on (or as it is)."""
    error = _request_error(exc, key, bucket, endpoint_url, needed_by)
    if error is exc:
        raise exc
    raise error from exc


def _request_error(exc, key: str, bucket: str, endpoint_url: str | None,
                   needed_by: str) -> Exception:
    """Translate a botocore ClientError into the error a user can act on (or return it)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    where = _where(bucket, endpoint_url)
    if code == "NoSuchBucket":
        return NSDKeyError(f"{key}: {where} does not exist{_needed(needed_by)}; "
                           "check nsd.bucket and nsd.endpoint_url")
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return NSDKeyError(
            f"{key}: no such key in {where}{_needed(needed_by)}. NSD may not have this "
            "file (e.g. a session without rest runs), or the key pattern, bucket or "
            "endpoint is wrong")
    if code in ("AccessDenied", "403") or status == 403:
        return NSDAccessError(
            f"{key}: anonymous read refused (403 AccessDenied) by {where}{_needed(needed_by)}. "
            "Check the key, the bucket name, and that the endpoint serves the public "
            f"NSD bucket ({BUCKET!r} on AWS allows anonymous reads)")
    if code in ("PreconditionFailed", "412") or status == 412:
        return NSDIntegrityError(
            f"{key}: the object in {where} changed during the download (its ETag no "
            "longer matches the one read at the start); run the download again")
    return exc


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the connection broke", worth a resumed retry."""
    import http.client

    import urllib3.exceptions
    from botocore import exceptions as bx

    return (bx.HTTPClientError,          # ResponseStreamingError, ReadTimeoutError, ...
            bx.ConnectionError,          # EndpointConnectionError, ConnectTimeoutError
            bx.IncompleteReadError,      # body ended before Content-Length
            urllib3.exceptions.HTTPError,
            http.client.IncompleteRead,
            ConnectionError, TimeoutError)


def _md5_of_etag(head: dict) -> str | None:
    """The body's MD5 if the ETag is one (single-part upload, not SSE-KMS/SSE-C)."""
    if head.get("ServerSideEncryption", "").startswith("aws:kms") or head.get(
            "SSECustomerAlgorithm"):
        return None
    match = _MD5_ETAG.match(head.get("ETag", ""))
    return match.group(1) if match else None


def _head(client, key: str, bucket: str, endpoint_url: str | None, needed_by: str) -> dict:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        _raise_request_error(exc, key, bucket, endpoint_url, needed_by)


def _checked_chunks(body, key: str, bucket: str, endpoint_url: str | None):
    """The body's chunks; botocore's CRC check (objects that store one) → NSDIntegrityError."""
    from botocore.exceptions import FlexibleChecksumError

    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    except FlexibleChecksumError as exc:
        raise NSDIntegrityError(
            f"{key}: the body received from {_where(bucket, endpoint_url)} fails the "
            f"object's stored checksum ({exc})") from exc


def _stream_from(client, fh, digest, offset: int, size: int, key: str, bucket: str,
                 etag: str | None, endpoint_url: str | None, needed_by: str) -> int:
    """Append bytes ``offset``..``size-1`` of the object to ``fh``; return the new offset.

    Bytes written before a connection error stay in ``fh`` (and in ``digest``),
    so the caller can resume from the returned offset.
    """
    from botocore.exceptions import ClientError

    request = {"Bucket": bucket, "Key": key}
    if etag:  # S3 always sends one; some S3-compatible mirrors may not
        request["IfMatch"] = etag
    if offset:
        request["Range"] = f"bytes={offset}-"
    try:
        response = client.get_object(**request)
    except ClientError as exc:
        _raise_request_error(exc, key, bucket, endpoint_url, needed_by)
    skip = 0
    if offset:
        content_range = response.get("ContentRange")
        if content_range is None:
            # The server sent the whole object (Range is optional in HTTP):
            # drop what we already have rather than rewrite the file.
            skip = offset
        elif content_range != f"bytes {offset}-{size - 1}/{size}":
            raise NSDIntegrityError(
                f"{key}: asked {_where(bucket, endpoint_url)} for bytes {offset}-{size - 1} "
                f"of {size}, got {content_range!r}")
    body = response["Body"]
    try:
        for chunk in _checked_chunks(body, key, bucket, endpoint_url):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            fh.write(chunk)
            if digest is not None:
                digest.update(chunk)
            offset += len(chunk)
            if offset > size:
                raise NSDIntegrityError(
                    f"{key}: received more bytes than its size {size} "
                    f"({offset} so far) from {_where(bucket, endpoint_url)}")
    finally:
        body.close()
    return offset


def download_key(key: str, dest: str | os.PathLike, *, bucket: str = BUCKET,
                 endpoint_url: str | None = None, needed_by: str = "", attempts: int = 5,
                 backoff_s: float = 1.0, client=None) -> Path:
    """Download one object to ``dest`` (anonymous, verified, atomic); return ``dest``.

    Parameters
    ----------
    key : object key relative to the bucket root (an NSD key pattern).
    dest : local file; an existing file is replaced only by a verified download.
    bucket, endpoint_url : where to read (``endpoint_url=None``: AWS S3, us-east-1).
    needed_by : what needs the key, quoted in errors (e.g. ``"subj01 session 21 rest run01"``).
    attempts : tries of the body transfer (each resumes where the last broke),
        also botocore's retry budget per request.
    backoff_s : first wait between tries, s; doubles each try (±25 % jitter, ≤ 60 s).
    client : an S3 client to reuse (default: :func:`anonymous_s3_client`).

    Raises
    ------
    NSDKeyError (404), NSDAccessError (403), NSDIntegrityError (sizes or MD5
    disagree, or the object changed), NSDTransferError (still short after
    ``attempts`` tries; names bytes received and expected).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest = Path(dest)
    client = client or anonymous_s3_client(endpoint_url, max_attempts=attempts)
    where = _where(bucket, endpoint_url)
    head = _head(client, key, bucket, endpoint_url, needed_by)
    size = int(head["ContentLength"])
    declared = (head.get("Metadata") or {}).get(SIZE_METADATA)
    if declared is not None and declared.strip() != str(size):
        raise NSDIntegrityError(
            f"{key}: object in {where} holds {size} bytes but declares "
            f"x-amz-meta-{SIZE_METADATA}={declared}; refusing a truncated or padded "
            f"object{_needed(needed_by)}")
    md5 = _md5_of_etag(head)
    digest = hashlib.md5(usedforsecurity=False) if md5 else None
    transient = _transient_errors()
    started = time.monotonic()
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        received = 0
        for attempt in range(1, attempts + 1):
            last_error = None
            try:
                received = _stream_from(client, fh, digest, received, size, key, bucket,
                                        head.get("ETag"), endpoint_url, needed_by)
            except transient as exc:
                fh.flush()
                received, last_error = fh.tell(), exc
            if received == size:
                break
            if attempt < attempts:
                wait = min(60.0, backoff_s * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
                log.warning("%s: transfer broke at %d of %d bytes (%s); try %d of %d in %.1f s",
                            key, received, size, last_error or "short body", attempt + 1,
                            attempts, wait)
                time.sleep(wait)
        else:
            raise NSDTransferError(
                f"{key}: received {received} of {size} bytes from {where} after {attempts} "
                f"tries{_needed(needed_by)}; last error: {last_error or 'body ended early'}")
        fh.flush()
        os.fsync(fh.fileno())
        on_disk = os.fstat(fh.fileno()).st_size
        if on_disk != size:
            raise NSDIntegrityError(f"{key}: wrote {on_disk} bytes, expected {size}")
        if md5 and digest.hexdigest() != md5:
            raise NSDIntegrityError(
                f"{key}: MD5 {digest.hexdigest()} of the {size} bytes received differs from "
                f"the object's ETag {md5} in {where}")
    elapsed = time.monotonic() - started
    log.info("%s -> %s: %d bytes in %.1f s (%.1f MB/s)%s", key, dest, size, elapsed,
             size / 1e6 / max(elapsed, 1e-9), ", MD5 verified" if md5 else "")
    return dest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rest2visual download",
        description="Download one NSD object from S3 anonymously into DEST, verified "
                    "(size, ETag/MD5) and atomic (no partial file under DEST).")
    parser.add_argument("key", metavar="KEY", help="object key, e.g. nsddata/experiments/"
                                                   "nsd/nsd_expdesign.mat")
    parser.add_argument("dest", metavar="DEST", type=Path, help="local file to write")
    parser.add_argument("--bucket", default=BUCKET, help=f"bucket (default {BUCKET})")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3 endpoint URL (default: AWS S3, us-east-1)")
    parser.add_argument("--needed-by", default="",
                        help="what needs this key, quoted in error messages")
    parser.add_argument("--attempts", type=int, default=5,
                        help="tries of the transfer, resumed where it broke (default 5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rest2visual download KEY DEST [--bucket B] [--endpoint-url URL] [--needed-by TEXT]``."""
    from botocore.exceptions import BotoCoreError, ClientError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        download_key(args.key, args.dest, bucket=args.bucket, endpoint_url=args.endpoint_url,
                     needed_by=args.needed_by, attempts=args.attempts)
    except (InputError, OSError, BotoCoreError, ClientError) as exc:
        print(f"rest2visual download: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
