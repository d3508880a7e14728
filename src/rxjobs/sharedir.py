"""Where share dirs are: the default one, and one spelling per share dir.

A share dir is a place, not a string: jobs belong to the share dir they are
found in, whatever path spelled it when they were submitted.  This module
only turns what a user gives into the URL rxjobs opens.
"""

from __future__ import annotations

import getpass
import os

# fsspec protocols of object stores: no directories, no rename, atomic single puts.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "oci",
                                    "cos", "obs", "tos", "r2", "b2"})
# Protocols whose filesystem lives in one process: unusable by drivers and workers.
PROCESS_LOCAL_PROTOCOLS = frozenset({"memory"})


def default_share_dir() -> str:
    """``$RXJOBS_SHARE_DIR``, else ``<user data dir>/rxjobs/share/<user>``."""
    env = os.environ.get("RXJOBS_SHARE_DIR")
    if env:
        return normalize_share_dir(env)
    import platformdirs

    base = platformdirs.user_data_dir("rxjobs", appauthor=False)
    return normalize_share_dir(os.path.join(base, "share", getpass.getuser()))


def normalize_share_dir(share_dir: str | os.PathLike[str]) -> str:
    """One spelling per share dir: an absolute path, or ``protocol://path``."""
    text = os.fspath(share_dir)
    if not text:
        raise ValueError("share_dir is empty; give a directory path or an fsspec URL")
    if "\x00" in text:
        raise ValueError("share_dir contains a NUL character")
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    import fsspec  # only for URLs: plain paths need no fsspec (faster driver start)
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(text)
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path)
    return str(fs.unstrip_protocol(path.rstrip("/")))


def is_process_local(share_dir: str) -> bool:
    """Whether only this process can see ``share_dir`` (``memory://``)."""
    return "://" in share_dir and share_dir.split("://", 1)[0] in PROCESS_LOCAL_PROTOCOLS
