"""Which tests share a worker in a parallel run (``pytest -n 2 --dist loadgroup``): those of a
module that share a module or class fixture, and those that use a costly session fixture."""

from __future__ import annotations

import pytest

from conftest import worker_groups


@pytest.mark.timeout(10)
@pytest.mark.parametrize("nodeid, scopes, group", [
    # nothing shared beyond the test (or only cheap session fixtures): any worker
    ("tests/test_a.py::test_x", {}, None),
    ("tests/test_a.py::test_x", {"tmp_path": "function", "s3_server": "session"}, None),
    # a fixture of its module or class (a cluster, a JVM, a browser): the module's group
    ("tests/test_a.py::test_x[p]", {"slurm": "module", "tmp_path": "function"}, "tests/test_a.py"),
    ("tests/sub/test_b.py::TestC::test_y", {"kernel": "class"}, "tests/sub/test_b.py"),
    ("tests/test_a.py::test_x", {"cluster": "package"}, "tests/test_a.py"),
    # a costly session fixture: its own group, across modules
    ("tests/test_a.py::test_x", {"big_share": "session"}, "big_share"),
    ("tests/test_a.py::test_x", {"big_share": "session", "browser": "module"}, "big_share"),
])
def test_a_lone_test_shares_a_worker_with_those_of_its_costly_fixtures(nodeid, scopes, group):
    assert worker_groups([(nodeid, scopes)]) == [group]


@pytest.mark.timeout(10)
def test_a_modules_fixture_and_a_session_fixture_of_one_of_its_tests_start_once():
    """A module whose tests share a browser, one of which uses big_share: the whole module joins
    big_share's group, with the other modules that use it; its tests without a module fixture,
    and other modules, do not."""
    tests = [
        ("tests/test_ui.py::test_small", {"browser": "module"}),
        ("tests/test_ui.py::test_at_scale", {"browser": "module", "big_share": "session"}),
        ("tests/test_ui.py::test_plain", {"tmp_path": "function"}),
        ("tests/test_copy.py::test_copy", {"big_copy": "module", "big_share": "session"}),
        ("tests/test_dask.py::test_job", {"cluster": "module"}),
        ("tests/test_cli.py::test_list", {"big_share": "session"}),
    ]
    assert worker_groups(tests) == ["big_share", "big_share", None, "big_share", "tests/test_dask.py",
                                    "big_share"]


@pytest.fixture(scope="module")
def shared_by_the_module():
    return object()


@pytest.mark.timeout(10)
def test_a_test_of_a_module_fixture_is_marked_with_its_modules_group(request, shared_by_the_module):
    mark = request.node.get_closest_marker("xdist_group")
    assert mark is not None and mark.args[0] == "tests/test_parallel_groups.py"


@pytest.mark.timeout(10)
def test_a_test_of_function_fixtures_only_is_in_no_group(request, tmp_path):
    assert request.node.get_closest_marker("xdist_group") is None
