"""What a notebook shows of jobs: each job read once, its state derived, as :mod:`rxjobs.displays` views.

The ``_repr_html_`` of ``RxRemoteJob`` and of the list ``rx_get_jobs``
returns call these; they are never imported outside a notebook (Jupyter asks
for ``_repr_html_`` only when it renders an object).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import jobs, listing
from .displays import JobView, job_html, jobs_html
from .records import read_job_record
from .status import RxRemoteJobStatus
from .store import Store


def job_views(store: Store, job_ids: Sequence[str]) -> list[JobView]:
    """The views of these jobs of one share dir, in the order given; a job removed meanwhile is
    shown as ``missing`` (a notebook cell that lists jobs then cleans them up re-renders)."""
    found = {job.job_id: job for job in listing.list_jobs(store, job_ids=job_ids, need_status=False)}
    views = []
    for job_id in job_ids:
        job = found.get(job_id)
        if job is None:
            views.append(JobView(job_id, RxRemoteJobStatus.MISSING.value))
            continue
        derived = jobs.job_status(store, job_id)
        summary = listing.summarize(store, job._replace(
            status=derived.status, submitted=listing.submit_time(job_id, job.record)))
        try:
            done: int | None = jobs.tasks_done(store, job_id)
        except (LookupError, ValueError, OSError):
            done = None
        if derived.status is RxRemoteJobStatus.FINISHED and summary.n_tasks is not None:
            done = summary.n_tasks  # results already collected (retrieved) still count as done
        views.append(JobView(job_id, derived.status.value, summary.submitted, summary.function, done,
                             summary.n_tasks, summary.files, summary.bytes, derived.reason))
    return views


def job_html_of(store: Store, job_id: str) -> str:
    """The HTML of one job of a share dir."""
    return job_html(job_views(store, [job_id])[0], store.url)


def jobs_html_of(stores: Sequence[tuple[Store, Sequence[str]]]) -> str:
    """The HTML of a list of jobs, given as (share dir, its job ids) in the list's order."""
    views: list[JobView] = []
    for store, ids in stores:
        views.extend(job_views(store, ids))
    where = stores[0][0].url if len(stores) == 1 else ""
    return jobs_html(views, where)


def task_progress(store: Store, job_id: str) -> tuple[RxRemoteJobStatus, int | None, int | None]:
    """A job's state, tasks done and tasks in all (None when they cannot be read): what a
    progress display shows."""
    status = jobs.job_status(store, job_id).status
    try:
        total: int | None = read_job_record(store, job_id).n_tasks
        done: int | None = jobs.tasks_done(store, job_id)
    except (LookupError, ValueError, OSError):
        total = done = None
    if status is RxRemoteJobStatus.FINISHED and total is not None:
        done = total
    return status, done, total
