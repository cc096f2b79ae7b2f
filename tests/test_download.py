"""rest2visual.nsd.download against a local public S3 bucket (moto on 127.0.0.1).

No AWS credentials exist anywhere in these tests (env cleared, config files
pointed at nothing, instance metadata disabled): a client that tried to sign
would fail with NoCredentialsError, so every pass also proves anonymous reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import s3server
from rest2visual.nsd import download as dl
from rest2visual.nsd import keys

BUCKET = keys.BUCKET
BIG = keys.betas_key(1, 21)            # 3 MB: several drop/resume points
REST = keys.rest_key(1, 21, 1)
EMPTY = keys.motion_key(1, 21, 1)      # a zero-byte object
DESIGN = keys.EXPDESIGN


@pytest.fixture(autouse=True)
def no_aws_credentials(monkeypatch, tmp_path_factory):
    """No credentials, no config, no instance metadata: only unsigned requests can work."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    nothing = tmp_path_factory.mktemp("no-aws")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nothing / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nothing / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def source(tmp_path) -> dict[str, bytes]:
    """A few NSD keys with random bytes, written under tmp_path/src."""
    rng = np.random.default_rng(0)
    objects = {BIG: rng.bytes(3_000_000), REST: rng.bytes(70_001), EMPTY: b"",
               DESIGN: rng.bytes(1234)}
    for key, data in objects.items():
        path = tmp_path / "src" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return objects


@pytest.fixture
def endpoint(tmp_path, source):
    with s3server.local_nsd_bucket(tmp_path / "src") as url:
        yield url


def leftovers(folder: Path) -> list[Path]:
    """Temporary siblings (atomic_path's hidden ``.name.tmp-*``) left in ``folder``."""
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def get(endpoint_url: str, dest: Path, key: str = BIG, **kwargs) -> Path:
    return dl.download_key(key, dest, endpoint_url=endpoint_url, backoff_s=0.0, **kwargs)


def test_download_is_byte_identical_anonymous_and_md5_checked(endpoint, source, tmp_path):
    out = tmp_path / "nsd"
    for key, data in source.items():
        assert get(endpoint, out / key, key) == out / key
        assert (out / key).read_bytes() == data
    assert leftovers(out) == []
    object_requests = [(m, h) for m, k, h in s3server.requests_seen(endpoint)
                       if m in ("HEAD", "GET")]
    assert len(object_requests) == 2 * len(source)
    assert all("authorization" not in h for _, h in object_requests)
    # every GET pins the version read by HEAD
    etag = '"' + hashlib.md5(source[BIG]).hexdigest() + '"'
    assert any(h.get("if-match") == etag for m, h in object_requests if m == "GET")


def test_redownload_replaces_an_existing_file(endpoint, source, tmp_path):
    dest = tmp_path / "out" / REST
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"stale")
    get(endpoint, dest, REST)
    get(endpoint, dest, REST)
    assert dest.read_bytes() == source[REST]
    assert leftovers(dest.parent) == []


def test_missing_key_names_key_bucket_and_needed_by(endpoint, tmp_path):
    key = keys.rest_key(1, 31, 14)
    with pytest.raises(dl.NSDKeyError) as err:
        get(endpoint, tmp_path / "x.nii.gz", key, needed_by="subj01 session 31 rest run14")
    message = str(err.value)
    assert key in message and "subj01 session 31 rest run14" in message
    assert BUCKET in message and endpoint in message
    assert not (tmp_path / "x.nii.gz").exists() and leftovers(tmp_path) == []


def test_main_missing_key_exits_nonzero_with_message(endpoint, tmp_path, capsys):
    key = "nsddata/does/not/exist.nii.gz"
    code = dl.main([key, str(tmp_path / "x"), "--endpoint-url", endpoint,
                    "--needed-by", "subj02 session 22 betas"])
    assert code != 0
    err = capsys.readouterr().err
    assert key in err and "subj02 session 22 betas" in err
    assert not (tmp_path / "x").exists()


def test_cli_download_writes_the_file(endpoint, source, tmp_path):
    from rest2visual.cli import main as rest2visual

    dest = tmp_path / "resources" / "nsd" / DESIGN
    assert rest2visual(["download", DESIGN, str(dest), "--endpoint-url", endpoint,
                        "--bucket", BUCKET]) == 0
    assert dest.read_bytes() == source[DESIGN]


def test_access_denied_says_anonymous_read_refused(endpoint, tmp_path):
    s3server.respond_with_error(endpoint, REST, 403, "AccessDenied")
    with pytest.raises(dl.NSDAccessError, match="anonymous read refused") as err:
        get(endpoint, tmp_path / "rest.nii.gz", REST, needed_by="subj01 session 21 rest run01")
    assert REST in str(err.value) and "subj01 session 21 rest run01" in str(err.value)
    assert not (tmp_path / "rest.nii.gz").exists()


def test_connection_dropped_mid_body_resumes_with_range(endpoint, source, tmp_path):
    s3server.drop_connection(endpoint, BIG, after_bytes=1_000_000, times=2)
    dest = get(endpoint, tmp_path / "betas.nii.gz")
    assert dest.read_bytes() == source[BIG]
    ranges = [h.get("range") for m, k, h in s3server.requests_seen(endpoint)
              if m == "GET" and k == BIG]
    assert ranges == [None, "bytes=1000000-", "bytes=2000000-"]
    assert leftovers(tmp_path) == []


def test_first_get_failing_before_any_byte_is_retried(endpoint, source, tmp_path):
    s3server.drop_connection(endpoint, REST, after_bytes=0, times=1)
    assert get(endpoint, tmp_path / "r", REST).read_bytes() == source[REST]


def test_server_error_is_retried_by_botocore(endpoint, source, tmp_path):
    s3server.respond_with_error(endpoint, DESIGN, 503, "SlowDown", times=1, methods=("GET",))
    assert get(endpoint, tmp_path / "d", DESIGN, attempts=2).read_bytes() == source[DESIGN]


def test_server_ignoring_range_still_gives_identical_bytes(endpoint, source, tmp_path):
    s3server.drop_connection(endpoint, BIG, after_bytes=123_457, times=1)
    s3server.ignore_range(endpoint, BIG, times=1)
    assert get(endpoint, tmp_path / "b").read_bytes() == source[BIG]


def test_truncated_transfer_is_refused_and_leaves_no_file(endpoint, source, tmp_path):
    dest = tmp_path / "out" / "betas.nii.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous complete version")
    s3server.drop_connection(endpoint, BIG, after_bytes=500_000, times=None)
    with pytest.raises(dl.NSDTransferError) as err:
        get(endpoint, dest, attempts=3)
    message = str(err.value)
    # each try resumes and gets 500 000 more bytes before the cut
    assert "received 1500000 of 3000000 bytes" in message and "3 tries" in message
    assert dest.read_bytes() == b"previous complete version"
    assert leftovers(tmp_path) == []


def test_object_shorter_than_its_declared_size_is_refused(endpoint, tmp_path):
    key = keys.betas_key(2, 22)
    s3server.put_object(endpoint, key, b"x" * 1000, declared_size=4096)
    with pytest.raises(dl.NSDIntegrityError) as err:
        get(endpoint, tmp_path / "b", key)
    assert "1000" in str(err.value) and "4096" in str(err.value)
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []
    assert [m for m, k, _ in s3server.requests_seen(endpoint) if k == key and m == "GET"] == []


def test_object_matching_its_declared_size_downloads(endpoint, tmp_path):
    key = keys.betas_key(2, 23)
    s3server.put_object(endpoint, key, b"y" * 1000, declared_size=1000)
    assert get(endpoint, tmp_path / "b", key).read_bytes() == b"y" * 1000


def test_corrupted_body_fails_the_etag_md5(endpoint, tmp_path):
    s3server.corrupt_byte(endpoint, REST, position=4321)
    with pytest.raises(dl.NSDIntegrityError, match="MD5 .* differs from the object's ETag"):
        get(endpoint, tmp_path / "r", REST)
    assert not (tmp_path / "r").exists() and leftovers(tmp_path) == []


def test_corrupted_body_fails_a_stored_crc32(endpoint, tmp_path):
    key = keys.ncsnr_key(3)
    s3server.put_object(endpoint, key, bytes(range(256)) * 100, crc32=True)
    s3server.corrupt_byte(endpoint, key, position=9999)
    with pytest.raises(dl.NSDIntegrityError, match="stored checksum"):
        get(endpoint, tmp_path / "n", key)
    assert not (tmp_path / "n").exists() and leftovers(tmp_path) == []


def test_object_changed_during_download_is_refused(endpoint, tmp_path):
    # the object is replaced when the connection drops, before the resumed GET
    s3server.drop_connection(endpoint, BIG, after_bytes=100_000, times=1,
                             then=lambda: s3server.put_object(endpoint, BIG, b"new version"))
    with pytest.raises(dl.NSDIntegrityError, match="changed during the download"):
        get(endpoint, tmp_path / "b")
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []


def test_attempts_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="attempts"):
        dl.download_key(REST, tmp_path / "x", attempts=0)
