"""Preloading a payload's installed modules in the fork server (rxjobs.preload).

Pure tables for what a payload names and what the server may import; then a
real fork server, in a virtual environment of its own holding two tiny
installed distributions, showing that a second job imports nothing again, that
a reinstalled module retires the server, and that a module whose import starts
a thread is never held.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import cloudpickle
import numpy
import pytest

from rxjobs.preload import (
    caller_stamps,
    in_site_dirs,
    is_module_name,
    modules_to_preload,
    referenced_modules,
    site_dirs,
    stale,
)


def _by_value(x):
    return x + 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("obj, protocol, expected", [
    (collections.OrderedDict, None, ["collections"]),
    (os.path.join, 0, ["posixpath"]),  # protocol 0: GLOBAL carries the names
    (os.path.join, 2, ["posixpath"]),
    ([json.dumps, json.loads, json.dumps], None, ["json"]),  # the module string memoized, got again
    (json.decoder.JSONDecoder, None, ["json.decoder"]),  # the module itself, not its package
    ({"a": 1, "b": [1.5, "x"]}, None, []),
    (lambda x: x, None, ["cloudpickle.cloudpickle"]),  # by value: only cloudpickle's helpers
])
def test_referenced_modules_names_what_unpickling_would_import(obj, protocol, expected):
    data = cloudpickle.dumps(obj, protocol=protocol)
    found = referenced_modules(data)
    assert [name for name in found if name not in ("copyreg", "_codecs")] == expected
    assert all(is_module_name(name) for name in found)


@pytest.mark.timeout(30)
def test_a_search_s_objects_name_their_defining_modules_each_once():
    from sklearn.svm import SVC
    data = cloudpickle.dumps([SVC(), numpy.zeros((50, 4)), json.dumps] * 3)
    found = referenced_modules(data)
    assert {"sklearn.svm._classes", "numpy", "json"} <= set(found)
    assert len(found) == len(set(found))


@pytest.mark.timeout(30)
def test_an_array_names_numpy_modules_only():
    found = referenced_modules(cloudpickle.dumps(numpy.arange(3)))
    assert found and {name.partition(".")[0] for name in found} == {"numpy"}


@pytest.mark.timeout(30)
def test_a_function_pickled_by_value_names_not_its_module():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        found = referenced_modules(cloudpickle.dumps(_by_value))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert __name__ not in found
    assert referenced_modules(cloudpickle.dumps(_by_value)) == [__name__]  # by reference: named


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data, kwargs, expected", [
    (b"", {}, []),
    (b"not a pickle at all", {}, []),
    (pickle.dumps([json.dumps, os.path.join])[:-12], {}, ["json"]),  # cut short: what was read
    (pickle.dumps([json.dumps, os.path.join, collections.OrderedDict]), {"limit": 2},
     ["json", "posixpath"]),
    (pickle.dumps([bytes(200), collections.OrderedDict]), {"max_bytes": 100}, []),
    (pickle.dumps([bytes(200), collections.OrderedDict]), {"max_bytes": 400}, ["collections"]),
    # the bytes of a reference inside a bytes value are named too (the server checks each name)
    (pickle.dumps([b"\x8c\x04json\x94\x8c\x05dumps\x94\x93"]), {}, ["json"]),
    # a length byte that does not match, or no STACK_GLOBAL after the names: nothing
    (b"\x80\x04\x8c\x05json\x94\x8c\x05dumps\x94\x93", {}, []),
    (b"\x80\x04\x8c\x04json\x94\x8c\x05dumps\x94.", {}, []),
    # protocol 0/2 text: GLOBAL lines; a protocol-4 pickle is not read for them
    (b"cposixpath\njoin\n.", {}, ["posixpath"]),
    (b"\x80\x04cposixpath\njoin\n.", {}, []),
])
def test_referenced_modules_is_bounded_and_survives_bad_input(data, kwargs, expected):
    assert referenced_modules(data, **kwargs) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("requested, imported, held, failed, limit, expected", [
    (["sklearn.svm._classes", "numpy"], [], [], [], 32, ["sklearn.svm._classes", "numpy"]),
    (["numpy", "numpy", "numpy.linalg"], [], [], [], 32, ["numpy", "numpy.linalg"]),  # once each
    (["sklearn.svm", "numpy"], ["numpy"], ["numpy"], [], 32, ["sklearn.svm"]),  # imported already
    (["sklearn.svm", "numpy.linalg"], ["numpy"], ["numpy"], [], 32,  # held: its modules may come
     ["sklearn.svm", "numpy.linalg"]),
    (["sklearn.svm", "numpy.linalg"], ["numpy"], [], [], 32, ["sklearn.svm"]),  # the server's own numpy
    (["sklearn.svm", "numpy"], [], [], ["sklearn.svm"], 32, ["numpy"]),  # failed before: remembered
    (["sklearn", "numpy"], [], [], [], 1, ["sklearn"]),  # bounded
    (["json.decoder", "collections"], [], [], [], 32, []),  # the standard library
    (["mylocal.sub", "__main__", "builtins"], [], [], [], 32, []),  # no installed distribution
    (["rxjobs.calls", "cloudpickle", "psutil"], [], [], [], 32, []),  # the server's own
    (["_private.x", "numpy..linalg", "not-a-name", "numpy.1x", ""], [], [], [], 32, []),
])
def test_modules_to_preload(requested, imported, held, failed, limit, expected):
    installed = {"sklearn", "numpy", "rxjobs", "cloudpickle", "psutil", "_private", "json", "mylocal_x"}
    assert modules_to_preload(requested, installed, imported, held, failed, limit) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("origin, expected", [
    ("/venv/lib/python3.11/site-packages/numpy/__init__.py", True),
    ("/venv/lib/python3.11/site-packages-evil/numpy/__init__.py", False),  # a prefix is no parent
    ("/home/me/project/numpy/__init__.py", False),
    ("relative/numpy/__init__.py", False),
    (None, False),
    ("", False),
])
def test_in_site_dirs(origin, expected):
    assert in_site_dirs(origin, ["/venv/lib/python3.11/site-packages", "", "/other/"]) is expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stamps, held, expected", [
    ({"a": "f:1:2"}, {}, []),
    ({"a": "f:1:2"}, {"a": "f:1:2"}, []),
    ({"a": "f:1:3", "b": "g:1:1"}, {"a": "f:1:2", "c": "h:0:0"}, ["a"]),
])
def test_stale(stamps, held, expected):
    assert stale(stamps, held) == expected


@pytest.mark.timeout(30)
def test_caller_stamps_names_only_modules_in_the_site_dirs(tmp_path, monkeypatch):
    (tmp_path / "numpy_lookalike").mkdir()
    (tmp_path / "numpy_lookalike" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    stamps = caller_stamps(["numpy.linalg", "numpy", "numpy_lookalike", "json", "rxjobs.calls",
                            "no_such_module_here"])
    assert list(stamps) == ["numpy"]
    path, mtime, size = stamps["numpy"].rsplit(":", 2)
    assert os.path.samefile(path, numpy.__file__) and int(size) == os.path.getsize(numpy.__file__)
    assert any(in_site_dirs(path, [d]) for d in site_dirs())


# -- a real fork server, in a venv of its own --------------------------------------------------

_COUNTING_MODULE = """
import os
with open({log!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
{extra}

def double(x):
    return 2 * x
"""

_CALLER = textwrap.dedent("""
    import json, sys
    import rxcount.work, rxthread.work
    from rxjobs import RxLocalParallel, rx_exec, rx_get_job_results, rx_wait_for_job
    from rxjobs.engines import forkserver

    share, step = sys.argv[1], sys.argv[2]
    function = {"count": rxcount.work.double, "thread": rxthread.work.double}[step]
    cc = RxLocalParallel(num_workers=2, share_dir=share, wait=False)
    out = []
    for _ in range(2):
        job = rx_exec(function, args=[{"x": 1}, {"x": 2}], compute_context=cc)
        rx_wait_for_job(job, progress=False)
        out.append({"results": rx_get_job_results(job),
                    "servers": [s["pid"] for s in forkserver.list_servers()
                                if s["python"] == sys.executable]})
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def preload_venv(tmp_path_factory):
    """A venv of its own (so its fork server is its own), seeing this one's packages, with
    two installed distributions: ``rxcount.work`` logs each import's pid, ``rxthread.work``
    too and starts a thread."""
    base = tmp_path_factory.mktemp("pv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True,
                   timeout=120)
    python = base / "venv" / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    (site_packages / "ours.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    log = base / "imports.log"
    for name, extra in (("rxcount", ""),
                        ("rxthread", "import threading, time\n"
                                     "threading.Thread(target=time.sleep, args=(3600,), "
                                     "daemon=True).start()")):
        (site_packages / name).mkdir()
        (site_packages / name / "__init__.py").write_text("")
        (site_packages / name / "work.py").write_text(
            _COUNTING_MODULE.format(log=f"{log}.{name}", extra=extra))
        info = site_packages / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text(f"{name}\n")
    yield python, site_packages, log
    from rxjobs.engines.forkserver import stop_servers

    stop_servers(lambda record: record.get("python") == str(python))


def _run_caller(python: Path, share: Path, step: str, **env: str) -> list[dict]:
    done = subprocess.run([str(python), "-c", _CALLER, str(share), step], capture_output=True,
                          text=True, timeout=240, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _importers(log: Path, name: str) -> list[int]:
    path = Path(f"{log}.{name}")
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(600)
def test_the_fork_server_preloads_an_installed_module_once_for_every_later_job(
        preload_venv, tmp_path):
    python, site_packages, log = preload_venv
    from rxjobs.engines.forkserver import stop_servers

    stop_servers(lambda record: record.get("python") == str(python))
    # Off: each job's workers import the module again (the caller imports it once itself).
    before = len(_importers(log, "rxcount"))
    out = _run_caller(python, tmp_path / "off", "count", RXJOBS_FORK_SERVER_PRELOAD="0")
    assert [o["results"] for o in out] == [[2, 4], [2, 4]]
    assert len(_importers(log, "rxcount")) - before >= 3  # the caller, and one job's worker at least each

    # On: the server imports it once, before forking the first driver; no job imports it again.
    before = len(_importers(log, "rxcount"))
    out = _run_caller(python, tmp_path / "on", "count")
    assert [o["results"] for o in out] == [[2, 4], [2, 4]]
    (server,) = out[0]["servers"]
    assert out[1]["servers"] == [server]
    new = _importers(log, "rxcount")[before:]
    assert len(new) == 2 and server in new  # the caller and the server, nobody else

    # Reinstalled (its package's file has another size): the server retires, the job runs all
    # the same, and the next job's new server imports the new copy.
    init = site_packages / "rxcount" / "__init__.py"
    init.write_text(init.read_text() + "\n# 1.1\n")
    before = len(_importers(log, "rxcount"))
    out = _run_caller(python, tmp_path / "again", "count")
    assert [o["results"] for o in out] == [[2, 4], [2, 4]]
    assert server not in out[0]["servers"]
    (renewed,) = out[1]["servers"]
    assert renewed in _importers(log, "rxcount")[before:]


@pytest.mark.timeout(600)
def test_a_module_whose_import_starts_a_thread_retires_the_server_and_is_named_no_more(
        preload_venv, tmp_path):
    python, _site_packages, log = preload_venv
    from rxjobs.engines.forkserver import stop_servers

    stop_servers(lambda record: record.get("python") == str(python))
    out = _run_caller(python, tmp_path / "thread", "thread")
    assert [o["results"] for o in out] == [[2, 4], [2, 4]]  # both ran (the first as a fresh driver)
    assert out[0]["servers"] == []  # the server that imported it retired
    (second_server,) = out[1]["servers"]
    assert second_server not in _importers(log, "rxthread")  # the new server was not asked again
