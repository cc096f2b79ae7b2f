"""The download stage end to end: `snakemake` against a local public S3 bucket (moto).

The toy simulated NSD is uploaded under NSD's keys into a bucket named like the
real one, with a public-read policy; the workflow reads it anonymously.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from conftest import run_workflow, toy_config
from s3server import local_nsd_bucket, put_object, signed_client

pytestmark = pytest.mark.workflow


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    """Snakemake's jobs must read anonymously: no AWS credentials anywhere."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _s3_config(endpoint):
    return toy_config(nsd={"source": "s3", "endpoint_url": endpoint,
                           "download_dir": "resources/nsd", "subjects": [1],
                           "sessions": [21]})


def _needed(config):
    from rest2visual.config import check_config  # noqa: F401  (validated by the workflow)
    from rest2visual.nsd.check import workflow_keys

    full = {"nsd": {**config["nsd"], "space": "func1pt8mm",
                    "beta_version": "betas_fithrf_GLMdenoise_RR"},
            "registration": {"crosscheck": True}}    # the schema's default
    return [k.key for k in workflow_keys(full)]


def test_download_targets_byte_identical_then_nothing_to_do(tmp_path, toy_nsd):
    with local_nsd_bucket(toy_nsd.nsd_root) as endpoint:
        config = _s3_config(endpoint)
        proc = run_workflow(tmp_path, config, "--until", "download_nsd_key")
        keys = _needed(config)
        assert len(keys) >= 8
        for key in keys:
            got = tmp_path / "resources/nsd" / key
            assert filecmp.cmp(got, Path(toy_nsd.nsd_root) / key, shallow=False), key
        assert proc.stdout.count("rule download_nsd_key:") == len(keys)
        again = run_workflow(tmp_path, config, "--until", "download_nsd_key")
        assert "rule download_nsd_key:" not in again.stdout  # a second run does nothing


def test_missing_key_fails_naming_key_and_subject_session(tmp_path, toy_nsd):
    from rest2visual.nsd.keys import rest_key

    missing = rest_key(1, 21, 14)
    with local_nsd_bucket(toy_nsd.nsd_root) as endpoint:
        signed_client(endpoint).delete_object(Bucket="natural-scenes-dataset", Key=missing)
        proc = run_workflow(tmp_path, _s3_config(endpoint), "--until", "download_nsd_key",
                            "--keep-going", check=False)
    assert proc.returncode != 0
    assert missing in proc.stdout
    assert "subj01 session 21 rest run14" in proc.stdout
    assert not (tmp_path / "resources/nsd" / missing).exists()


def test_truncated_object_is_refused_and_leaves_no_file(tmp_path, toy_nsd):
    """An object whose declared size (x-amz-meta-size) disagrees with its bytes."""
    from rest2visual.nsd.keys import betas_key

    key = betas_key(1, 21)
    body = (Path(toy_nsd.nsd_root) / key).read_bytes()
    with local_nsd_bucket(toy_nsd.nsd_root) as endpoint:
        put_object(endpoint, key, body[: len(body) // 2], declared_size=len(body))
        proc = run_workflow(tmp_path, _s3_config(endpoint), "--until", "download_nsd_key",
                            "--keep-going", check=False)
    assert proc.returncode != 0
    assert key in proc.stdout and str(len(body)) in proc.stdout
    folder = (tmp_path / "resources/nsd" / key).parent
    assert not (tmp_path / "resources/nsd" / key).exists()
    assert not any(folder.glob(".*tmp-*")) if folder.exists() else True
