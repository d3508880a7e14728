"""Credentials never reach job.json: redaction by name and by value, as a table."""

from __future__ import annotations

import json

import pytest

from rxjobs import RxLocalParallel, rx_exec
from rxjobs.options import REDACTED, StorageOptions, has_redacted_value, redact, storage_options
from rxjobs.records import read_job_record
from rxjobs.store import open_store

CASES = [
    # (options as given, what job.json may hold)
    ({"key": "AKIA123", "secret": "s3cr3t"}, {"key": REDACTED, "secret": REDACTED}),
    ({"endpoint_url": "http://minio:9000"}, {"endpoint_url": "http://minio:9000"}),
    ({"endpoint_url": "https://alice:pw@minio:9000/x"}, {"endpoint_url": f"https://{REDACTED}@minio:9000/x"}),
    ({"config_kwargs": {"proxies": {"https": "http://bob:hunter2@proxy:3128"}}},
     {"config_kwargs": {"proxies": {"https": f"http://{REDACTED}@proxy:3128"}}}),
    ({"passphrase": "x", "pwd": "y", "login": "z", "session_token": "t"},
     {"passphrase": REDACTED, "pwd": REDACTED, "login": REDACTED, "session_token": REDACTED}),
    ({"client_kwargs": {"aws_secret_access_key": "k", "region_name": "eu"}},
     {"client_kwargs": {"aws_secret_access_key": REDACTED, "region_name": "eu"}}),
    ({"headers": {"Authorization": "Bearer abc", "Cookie": "sid=1", "X-Custom": "v",
                  "Content-Type": "application/json"}},
     {"headers": {"Authorization": REDACTED, "Cookie": REDACTED, "X-Custom": REDACTED,
                  "Content-Type": "application/json"}}),
    ({"note": "Basic dXNlcjpwdw=="}, {"note": REDACTED}),
    ({"urls": ["s3://a", "ftp://u:p@host/"]}, {"urls": ["s3://a", f"ftp://{REDACTED}@host/"]}),
    ({"anon": True, "use_ssl": False, "retries": 3}, {"anon": True, "use_ssl": False, "retries": 3}),
    ({"token": None}, {"token": None}),
    # issue 23: names, and values that hid a credential
    ({"pw": "a", "passcode": "b", "api": "c", "user_pw": "d", "api_version": "2"},
     {"pw": REDACTED, "passcode": REDACTED, "api": REDACTED, "user_pw": REDACTED, "api_version": "2"}),
    ({"endpoint_url": "https://alice:p/w@minio:9000/x"}, {"endpoint_url": f"https://{REDACTED}@minio:9000/x"}),
    ({"endpoint_url": "https://alice:p@ss@minio/x"}, {"endpoint_url": f"https://{REDACTED}@minio/x"}),
    ({"mirror": "//bob:hunter2@host/share"}, {"mirror": f"//{REDACTED}@host/share"}),
    ({"note": "curl -H 'Authorization: Bearer abc' x"},
     {"note": f"curl -H 'Authorization: Bearer {REDACTED}' x"}),
    ({"note": "Authorization: sid=1"}, {"note": f"Authorization: {REDACTED}"}),
    ({"url": "https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Signature=s3cr3t"},
     {"url": f"https://b.s3.amazonaws.com/k?X-Amz-Date=1&X-Amz-Signature={REDACTED}"}),
    ({"note": "see https://host/docs/@latest and the token docs"},
     {"note": "see https://host/docs/@latest and the token docs"}),
]


@pytest.mark.parametrize(("given", "stored"), CASES)
def test_redaction_by_name_and_value(given, stored):
    assert StorageOptions(given).redacted() == stored
    assert redact(given) == stored
    text = json.dumps(stored)
    for secret in ("AKIA123", "s3cr3t", "alice:pw", "hunter2", "Bearer abc", "sid=1", "dXNlcjpwdw==",
                   "p/w", "p@ss"):
        assert secret not in text


def test_redacted_values_never_come_back_as_credentials():
    assert storage_options({"secret": REDACTED, "endpoint_url": f"http://{REDACTED}@h"}) is None
    assert storage_options({"secret": REDACTED, "region": "eu"}) == StorageOptions({"region": "eu"})
    assert has_redacted_value({"client_kwargs": {"key": REDACTED}}) == "client_kwargs"
    assert has_redacted_value({"key": "real"}) is None


@pytest.mark.timeout(120)
def test_a_real_submit_writes_no_credential_to_job_json(tmp_path):
    options = {"key": "AKIAREAL", "passphrase": "pp", "config_kwargs": {
        "proxies": {"http": "http://user:password@proxy:8080"}},
        "headers": {"authorization": "Bearer tok"}}
    cc = RxLocalParallel(num_workers=1, share_dir=str(tmp_path / "share"), share_dir_options=options)
    results = rx_exec(lambda x: x + 1, x=[1, 2], compute_context=cc, auto_cleanup=False)
    assert list(results) == [2, 3]
    store = open_store(cc.share_dir)
    (job_id,) = store.list_job_ids()
    raw = store.read_bytes(store.paths(job_id).job_json).decode()
    for secret in ("AKIAREAL", '"pp"', "user:password", "Bearer tok"):
        assert secret not in raw
    assert read_job_record(store, job_id).job_id == job_id


def test_a_dask_address_with_a_login_is_stored_without_it():
    from rxjobs.contexts import RxDask

    stored = json.dumps(RxDask("tcp://bob:hunter2@scheduler:8786").to_dict())
    assert "hunter2" not in stored and "bob:" not in stored
    assert f"tcp://{REDACTED}@scheduler:8786" in stored
