"""Listing: time windows chosen by job id, records read once, values equal to RxRemoteJob(...)."""

from __future__ import annotations

import dataclasses
import json
import os
import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxjobs import (
    RxLocalParallel,
    RxLocalSeq,
    RxRemoteJob,
    RxRemoteJobStatus,
    jobs,
    list_jobs,
    listing,
    rx_get_jobs,
)
from rxjobs.errors import JobNotFoundError
from rxjobs.ids import ids_in_window, new_job_id, valid_ids, validate_job_id
from rxjobs.store import MAX_RECORD_BYTES, Store, open_store

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _record(store: Store, job_id: str, created: datetime | str, **context: object) -> dict:
    # RxLocalParallel refuses a memory:// share dir: store-level tests there record RxLocalSeq.
    cc = RxLocalParallel(share_dir=store.url, **context) if store.os_path(store.root) else RxLocalSeq()
    return jobs.JobRecord(job_id=job_id, created=str(created if isinstance(created, str)
                                                     else created.isoformat()),
                          user="u", context=cc.to_dict(), n_runs=1, n_tasks=1, options={},
                          submitter={}).to_json()


def _job(store: Store, job_id: str, created: datetime | str | None = None, raw: bytes | None = None,
         **context: object) -> str:
    """A job dir with a job.json (``raw`` bytes, else a record submitted at ``created``)."""
    store.ensure_root()
    paths = store.paths(job_id)
    store.makedir(paths.dir, exist_ok=True)
    if raw is None:
        raw = json.dumps(_record(store, job_id, created or T0, **context)).encode()
    store.write_atomic(paths.job_json, raw)
    return job_id


# -- Store.list_job_ids(start, end): the window by name ----------------------------------


ODD_IDS = ["notes", "rxJob_2026", "rxJob_20261128100000000000", "rxJob_x", "A9", "zzz",
           "rxJob_20261128100030000000_XYZ"]  # the last has the timed form: chosen by its name


@pytest.mark.timeout(60)
def test_window_keeps_timed_ids_between_its_edges_and_every_id_of_another_form(store_url):
    store = open_store(store_url)
    store.ensure_root()
    timed = {s: _job(store, new_job_id(at(s))) for s in (0, 10, 20, 30, 40)}
    for odd in ODD_IDS:
        _job(store, odd)
    others = sorted(ODD_IDS[:-1])

    def window(start: datetime | None, end: datetime | None) -> list[str]:
        ids = store.list_job_ids(start, end)
        assert ids == sorted(ids)
        return ids

    # Edges are included, to the microsecond.
    assert window(at(10), at(30)) == sorted(others + [timed[10], timed[20], timed[30], ODD_IDS[-1]])
    assert window(at(10) + US, at(30) - US) == sorted(others + [timed[20]])
    assert window(at(30), at(30)) == sorted(others + [timed[30], ODD_IDS[-1]])
    # Open-ended windows.
    assert window(at(20), None) == sorted(others + [timed[20], timed[30], timed[40], ODD_IDS[-1]])
    assert window(None, at(10)) == sorted(others + [timed[0], timed[10]])
    assert window(at(50), None) == others
    # The unwindowed listing is every job.
    assert window(None, None) == sorted(list(timed.values()) + ODD_IDS)


@pytest.mark.timeout(60)
def test_window_takes_naive_datetimes_as_local_time_and_any_time_zone(store_url):
    store = open_store(store_url)
    store.ensure_root()
    ids = [_job(store, new_job_id(at(s))) for s in (0, 10, 20)]
    naive_start = at(10).astimezone().replace(tzinfo=None)  # the same instant, local wall time
    plus_five = at(20).astimezone(timezone(timedelta(hours=5)))
    assert store.list_job_ids(naive_start, plus_five) == ids[1:]
    assert store.list_job_ids(naive_start + US, None) == ids[2:]


@pytest.mark.timeout(60)
def test_window_never_lists_symlinks_files_or_invalid_names(tmp_path):
    store = open_store(str(tmp_path / "share"))
    store.ensure_root()
    real = _job(store, new_job_id(at(10)))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "share" / new_job_id(at(11))).symlink_to(outside)
    (tmp_path / "share" / new_job_id(at(12))).write_text("{}")
    (tmp_path / "share" / "linked").symlink_to(outside)
    for bad in (".hidden", "bad name", "x" * 129, "-lead", ".trash"):
        (tmp_path / "share" / bad).mkdir()
    assert store.list_job_ids(at(0), at(20)) == [real]
    assert store.list_job_ids() == [real]


NAME_PARTS = st.lists(st.one_of(
    st.sampled_from(["rxJob_", "rxjob_", "_", ".", "-", "~", " ", "/x", "20261128", "é", "\n"]),
    st.text(alphabet="0123456789", min_size=18, max_size=21),
    st.text(alphabet=string.ascii_letters + string.digits + "_.-", max_size=6),
    st.just("x" * 100),
), min_size=1, max_size=5).map("".join).filter(lambda name: "/" not in name)


def _reference_window(names: list[str], start: datetime | None, end: datetime | None) -> list[str]:
    """What the window means, name by name: a valid id, and if of the timed form, its
    20 digits between the window's (zero-padded UTC microseconds) edges."""
    def digits(t: datetime) -> str:
        t = t.astimezone(UTC)
        return (f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}"
                f"{t.microsecond:06d}")

    kept = []
    for name in names:
        try:
            validate_job_id(name)
        except ValueError:
            continue
        timed = (name.startswith("rxJob_") and len(name) >= 27 and name[26] == "_"
                 and all(c in string.digits for c in name[6:26]))
        if timed and ((start is not None and name[6:26] < digits(start))
                      or (end is not None and name[6:26] > digits(end))):
            continue
        kept.append(name)
    return sorted(kept)


@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(names=st.lists(NAME_PARTS, unique=True, max_size=12),
       start=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
       end=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))))
def test_window_selection_by_name_matches_its_definition(names, start, end):
    if start is None and end is None:
        start = T0
    # Also the names of timed ids at the window's edges.
    edges = [new_job_id(t) for t in (start, end) if t is not None and t.year >= 1000]
    names = list(dict.fromkeys(names + edges))
    assert sorted(ids_in_window(names, start, end)) == _reference_window(names, start, end)


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(names=st.lists(NAME_PARTS, unique=True, max_size=12), batch=st.integers(1, 5))
def test_names_are_sifted_in_batches_as_one_by_one(names, batch):
    valid = [name for name in names if _reference_window([name], None, None)]
    assert valid_ids(names, batch) == valid


# -- reading job.json ---------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("encode", [
    lambda text: text.encode(),
    lambda text: b"\xef\xbb\xbf" + text.encode(),  # UTF-8 with a BOM
    lambda text: text.encode("utf-16"),
])
def test_job_json_is_read_in_any_encoding_json_accepts(store_url, encode):
    store = open_store(store_url)
    store.ensure_root()
    record = _record(store, "a", T0)
    _job(store, "a", raw=encode(json.dumps(record)))
    assert store.read_json(store.paths("a").job_json) == record
    assert jobs.read_job_record(store, "a", listed=True) == jobs.JobRecord.from_json(record)


@pytest.mark.timeout(60)
def test_job_json_that_is_no_record_is_a_value_error(tmp_path):
    store = open_store(str(tmp_path))
    _job(store, "garbage", raw=b"\xff\xfe\x00{")
    _job(store, "infinite", raw=json.dumps({**_record(store, "x", T0), "n_runs": float("inf")}).encode())
    _job(store, "huge", raw=b" " * (MAX_RECORD_BYTES + 1))
    _job(store, "linked")
    os.unlink(store.paths("linked").job_json)
    os.symlink(store.paths("garbage").job_json, store.paths("linked").job_json)
    os.makedirs(store.paths("dir").job_json)
    os.makedirs(store.paths("fifo").dir)
    os.mkfifo(store.paths("fifo").job_json)
    for job_id in ("garbage", "infinite", "huge", "linked", "dir", "fifo"):
        with pytest.raises(ValueError):
            jobs.read_job_record(store, job_id, listed=True)
    with pytest.raises(ValueError, match="invalid job id"):
        jobs.read_job_record(store, "../x")


@pytest.mark.timeout(60)
def test_job_record_parsed_fast_is_the_dataclass_value_and_stays_frozen(tmp_path):
    store = open_store(str(tmp_path))
    data = _record(store, "a", T0)
    record = jobs.JobRecord.from_json(data)
    assert record == jobs.JobRecord(**data)
    assert record.to_json() == data
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.n_runs = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="newer than rxjobs .* reads"):
        jobs.JobRecord.from_json({**data, "format": 99})


# -- rx_get_jobs / list_jobs --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_window_reads_untimed_jobs_by_their_record_and_skips_debris(tmp_path):
    store = open_store(str(tmp_path))
    cc = RxLocalParallel(share_dir=store.url)
    inside = _job(store, new_job_id(at(10)))
    edge = _job(store, new_job_id(at(20)))
    _job(store, new_job_id(at(30)))
    untimed_in = _job(store, "named-in", created=at(15))
    _job(store, "named-out", created=at(45))
    _job(store, "named-no-time", created="yesterday")
    corrupt_timed = _job(store, new_job_id(at(12)), raw=b"{not json")
    _job(store, "corrupt-untimed", raw=b"{not json")  # no time at all: not in any window
    got = [job.job_id for job in rx_get_jobs(cc, start_time=at(10), end_time=at(20), verbose=False)]
    # A directory without a record naming it is debris, not a job: never listed.
    assert corrupt_timed not in got
    assert got == sorted([inside, edge, untimed_in])
    listed = {job.job_id: created for job, created, _ in list_jobs(store.url, at(10), at(20))}
    assert listed == {inside: at(10), edge: at(20), untimed_in: at(15)}
    exact = rx_get_jobs(cc, exact_match=True, start_time=at(10), end_time=at(20), verbose=False)
    assert [job.job_id for job in exact] == sorted([inside, edge, untimed_in])


def _fields(job: RxRemoteJob) -> tuple:
    return job.job_id, job.share_dir, job.share_dir_options, job.compute_context


@pytest.mark.timeout(60)
def test_listed_jobs_are_the_values_rx_remote_job_makes(tmp_path):
    store = open_store(str(tmp_path))
    cc = RxLocalParallel(share_dir=store.url)
    ids = [_job(store, new_job_id(at(s)), num_workers=s % 3 + 1) for s in range(6)]
    _job(store, new_job_id(at(7)), raw=b"[]")  # debris: never listed
    _job(store, new_job_id(at(8)), raw=json.dumps(_record(store, "another-id", T0)).encode())
    listed = rx_get_jobs(cc, verbose=False)
    assert [job.job_id for job in listed] == ids
    for job in listed:
        stored = RxLocalParallel(share_dir=store.url, num_workers=ids.index(job.job_id) % 3 + 1)
        expected = RxRemoteJob(stored, job.job_id, share_dir=store.url)
        assert _fields(job) == _fields(expected)
        assert vars(job) == vars(expected)
    assert [job.job_id for job, _, _ in list_jobs(store.url)] == ids


# -- the listing service --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_listing_rows_fill_in_only_what_is_asked_for(tmp_path):
    store = open_store(str(tmp_path))
    cc = RxLocalParallel(share_dir=store.url)
    timed = _job(store, new_job_id(at(10)))
    other = _job(store, new_job_id(at(20)))
    _job(store, new_job_id(at(30)), raw=b"{not json")  # debris: never a row
    rows = list(listing.list_jobs(store, cc))
    assert [(r.job_id, r.submitted, r.status) for r in rows] == [
        (timed, at(10), jobs.job_status(store, timed).status),
        (other, at(20), jobs.job_status(store, other).status)]
    assert rows[0].record == jobs.read_job_record(store, timed)
    assert rows[0].context == cc and rows[1].context == cc
    bare = list(listing.list_jobs(store, cc, need_status=False))
    assert [(r.job_id, r.submitted, r.status) for r in bare] == [(timed, None, None), (other, None, None)]
    # A state filter derives the state, and only that.
    state = rows[0].status
    filtered = listing.list_jobs(store, cc, states=[state.value], need_status=False)
    assert [(r.job_id, r.submitted, r.status) for r in filtered] == [
        (r.job_id, None, state) for r in rows if r.status is state]
    others = set(RxRemoteJobStatus) - {r.status for r in rows}
    assert list(listing.list_jobs(store, cc, states=others)) == []
    # Without a context: every job of the share dir.
    assert [r.context for r in listing.list_jobs(store)] == [cc, cc]


@pytest.mark.timeout(60)
def test_find_job_is_the_row_of_one_job(tmp_path):
    store = open_store(str(tmp_path))
    job_id = _job(store, new_job_id(at(10)), num_workers=3)
    row = listing.find_job(store, job_id)
    assert row == listing.ListedJob(job_id, RxLocalParallel(share_dir=store.url, num_workers=3), None,
                                    at(10), None, jobs.read_job_record(store, job_id))
    assert listing.find_job(store, _job(store, "broken", raw=b"[]")).context == RxLocalSeq()
    with pytest.raises(JobNotFoundError):
        listing.find_job(store, "absent")
    with pytest.raises(ValueError, match="invalid job id"):
        listing.find_job(store, "../x")


@pytest.mark.timeout(60)
def test_summaries_are_what_rxjobs_list_prints(tmp_path):
    store = open_store(str(tmp_path))
    job_id = _job(store, new_job_id(at(10)))
    broken = _job(store, new_job_id(at(20)), raw=b"[]")
    summaries = [listing.summarize(store, row).to_json() for row in listing.list_jobs(store)]
    state = jobs.job_status(store, job_id).status.value
    size = store.usage(job_id)
    assert summaries[0] == {"job_id": job_id, "state": state, "submitted": "2026-11-28T10:00:10+00:00",
                            "function": "", "n_runs": 1, "n_tasks": 1, "files": size.files,
                            "bytes": size.bytes, "failed_runs": None}
    assert len(summaries) == 1  # the broken one is debris, never listed
    # Named on its own, debris still gets a row (for `rxjobs status` and `cleanup ID`).
    assert listing.summarize(store, listing.find_job(store, broken)).to_json()["n_runs"] is None


@pytest.mark.timeout(60)
def test_rx_get_jobs_reads_times_without_zone_as_local_time(tmp_path, new_york):
    store = open_store(str(tmp_path))
    cc = RxLocalParallel(share_dir=store.url)
    ids = [_job(store, new_job_id(at(s))) for s in (0, 10, 20)]

    def window(start, end) -> list[str]:
        return [job.job_id for job in rx_get_jobs(cc, start_time=start, end_time=end, verbose=False)]

    # T0 is 10:00 UTC, 05:00 in New York.
    assert window(datetime(2026, 11, 28, 5, 0, 10), None) == ids[1:]
    assert window("2026-11-28T05:00:10", "2026-11-28 05:00:10") == ids[1:2]
    assert window("2026-11-28T10:00:10Z", None) == ids[1:]
    assert window(None, datetime(2026, 11, 28, 10, 0, 10)) == ids  # 10:00 in New York: all
    assert window("1h", None) == []  # an hour ago: after every job
    with pytest.raises(TypeError, match="start_time must be a datetime or a string"):
        rx_get_jobs(cc, start_time=3, verbose=False)
    with pytest.raises(ValueError, match="before year 1"):
        rx_get_jobs(cc, end_time="99999999d", verbose=False)
