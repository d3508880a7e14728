"""The plain column writer that prints every table of the command line (``list``, ``status``, ``du``)."""

from __future__ import annotations

import pytest

from rxjobs.cli.printing import print_columns


def test_columns_are_aligned_three_spaces_apart_under_a_rule(capsys: pytest.CaptureFixture[str]):
    print_columns(("id", "state", "runs"), [("rxJob_a1", "finished", "3"), ("x", "failed", "12345")],
                  right=(False, False, True), colors=["green", "red"])
    assert capsys.readouterr().out.splitlines() == [
        "id         state       runs",
        "───────────────────────────",
        "rxJob_a1   finished       3",
        "x          failed     12345",
    ]


def test_off_a_terminal_no_colour_and_no_trailing_spaces(capsys: pytest.CaptureFixture[str]):
    print_columns(("state", "jobs"), [("queued", "1"), ("canceled", "22")], colors=["blue", "yellow"],
                  colored=0)
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert all(line == line.rstrip() for line in out.splitlines())
    assert out.splitlines()[2:] == ["queued     1", "canceled   22"]


def test_long_cells_are_never_folded(capsys: pytest.CaptureFixture[str]):
    long_id = "rxJob_" + "9" * 300
    print_columns(("id", "size"), [(long_id, "1 kB")], right=(False, True))
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == f"{long_id}   1 kB"


def test_many_rows_all_printed_in_order(capsys: pytest.CaptureFixture[str]):
    rows = [(str(i), "finished") for i in range(2000)]
    print_columns(("n", "state"), rows)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2002 and lines[2].split() == ["0", "finished"] and lines[-1].split()[0] == "1999"
