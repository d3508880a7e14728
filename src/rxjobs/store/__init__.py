"""The share directory: the one place that knows its layout (docs/design.md#the-share-dir).

:class:`Store` is the interface (:mod:`rxjobs.store.base`); a share dir on
this machine is a :class:`~rxjobs.store.local.LocalStore`, any other fsspec
URL (``s3://``, ``gs://``, ``memory://``...) an
:class:`~rxjobs.store.remote.FsspecStore`.  :func:`open_store` chooses once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..sharedir import normalize_share_dir
from .base import (
    FAILURES_SUFFIX,
    LOCKS,
    MARKER,
    MAX_RECORD_BYTES,
    OUTPUT_SUFFIX,
    RESERVED,
    RESULT_SUFFIX,
    TRASH,
    JobPaths,
    JobSnapshot,
    Store,
    TempFile,
    TopEntry,
    TrashEntry,
    Usage,
    loads_record,
)

__all__ = ["FAILURES_SUFFIX", "LOCKS", "MARKER", "MAX_RECORD_BYTES", "OUTPUT_SUFFIX", "RESERVED",
           "RESULT_SUFFIX", "TRASH", "JobPaths", "JobSnapshot", "Store", "TempFile", "TopEntry", "TrashEntry",
           "Usage", "loads_record", "open_store"]


def open_store(share_dir: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Store:
    """The store of a share dir: a local directory or any fsspec URL.

    Parameters
    ----------
    share_dir
        A local path or an fsspec URL (``s3://bucket/prefix``, ``memory://x``...).
    options
        fsspec storage options for the URL's filesystem (endpoint, credentials...).
    """
    url = normalize_share_dir(share_dir)
    if "://" not in url:  # normalize_share_dir spells local directories as plain paths
        from .local import LocalStore

        return LocalStore(url, options)
    from .remote import FsspecStore

    return FsspecStore(url, options)
