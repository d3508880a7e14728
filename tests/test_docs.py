"""The docs are tested: every snippet of README.md and docs/*.md runs against the code of today.

A small runner over the fenced blocks of the docs (the convention is in CONTRIBUTING.md):

- ```python blocks run in a subprocess, one per document, in the order they appear
  (a later block may use what an earlier one defined, as a reader would), with
  ``HOME``, the working directory and ``$RXJOBS_SHARE_DIR`` in a temporary
  directory: ``~/rxjobs-share`` is a fresh share dir there.  A block that raises
  fails the test, naming the document and line.
- ```sh blocks: each line that runs ``rxjobs`` runs through the installed
  command, against a temporary share dir holding one finished job.  In a
  synopsis, ``JOB_ID`` is that job's id, ``[...]`` is given, and ``FILE`` or
  ``/etc/rxjobs/policy.toml`` is the policy of the docs' ```toml block.  A usage
  error (exit 2), a traceback or an exit status above 1 fails the test.  Other
  lines (make, pip, export, systemctl...) are shown, not run.
- ```toml blocks are retention policies: each must load.
- A block right after ``<!-- doctest: skip (reason) -->`` is not run: only for
  what needs a cluster, an object store, root or a server that stays up.  The
  reason is required.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from rxjobs.retention import load_policy
from rxjobs.store import open_store

from factory import make_job

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_RE = re.compile(r"<!--\s*doctest:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE_RE = re.compile(r"^ {0,3}```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str  # the reason it is not run ("" if it runs)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, each with the skip reason of the comment right before it."""
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE_RE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not FENCE_RE.match(lines[end]):
            end += 1
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_RE.search(before)
        found.append(Block(doc, i + 1, opening["lang"], textwrap.dedent("\n".join(lines[i + 1:end])),
                           skip["reason"].strip() if skip else ""))
        i = end + 1
    return found


ALL = [block for doc in DOCS for block in blocks(doc)]


def _of(lang: str) -> list[Block]:
    return [block for block in ALL if block.lang == lang]


def test_the_runner_finds_the_docs_blocks():
    assert ROOT / "README.md" in DOCS and len(DOCS) > 5
    assert len(_of("python")) >= 3 and len(_of("sh")) >= 3 and _of("toml")
    # A skip comment says why: a bare one is not the convention.
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if "doctest:" in line:
                assert SKIP_RE.search(line), f"{doc.relative_to(ROOT)}:{number}: write " \
                                             "<!-- doctest: skip (the reason) -->"


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose home, data dirs and default share dir are in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXJOBS_")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / ".local" / "share"),
               RXJOBS_SHARE_DIR=str(tmp_path / "rxjobs-share"), PYTHONUNBUFFERED="1")
    return env


# -- python ---------------------------------------------------------------------------------

_PYTHON_RUNNER = """
import sys, traceback
namespace = {"__name__": "__main__"}
for where, code in BLOCKS:
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"doc snippet failed: {where}")
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", [doc for doc in DOCS if any(b.doc == doc for b in _of("python"))],
                         ids=lambda doc: str(doc.relative_to(ROOT)))
def test_python_snippets_run(doc: Path, tmp_path: Path, home: dict[str, str]):
    runnable = [(block.where, block.code) for block in _of("python") if block.doc == doc and not block.skip]
    if not runnable:
        return  # every block of it needs a cluster: said by its skip comments
    script = tmp_path / "snippets.py"
    script.write_text(f"BLOCKS = {runnable!r}\n{_PYTHON_RUNNER}")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=home, capture_output=True,
                          text=True, timeout=540)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-4000:]}"


# -- sh -------------------------------------------------------------------------------------


def _command() -> list[str]:
    installed = Path(sys.executable).with_name("rxjobs")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "rxjobs"]


def rxjobs_lines(block: Block) -> list[str]:
    """The lines of a ```sh block that run rxjobs (comments dropped, continuations joined)."""
    joined = block.code.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and (words[0] == "rxjobs" or words[:3] == ["python", "-m", "rxjobs"]):
            lines.append(line)
    return lines


def as_run(line: str, job_id: str, policy: Path) -> list[str]:
    """A synopsis line as a command: placeholders filled in, optional parts given."""
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)
    line = line.replace("JOB_ID...", "JOB_ID").replace("JOB_ID", job_id)
    line = line.replace("/etc/rxjobs/policy.toml", str(policy))
    words = shlex.split(line, comments=True)
    words = [str(policy) if word == "FILE" else word for word in words]
    start = 1 if words[0] == "rxjobs" else 3
    return [*_command(), *words[start:]]


SH = [block for block in _of("sh") if rxjobs_lines(block)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", [b for b in SH if not b.skip], ids=lambda block: block.where)
def test_command_lines_run(block: Block, tmp_path: Path, home: dict[str, str]):
    share = home["RXJOBS_SHARE_DIR"]
    job_id = make_job(open_store(share), "unretrieved").job_id
    policy = tmp_path / "policy.toml"
    policy.write_text(_of("toml")[0].code)
    for line in rxjobs_lines(block):
        done = subprocess.run(as_run(line, job_id, policy), cwd=tmp_path, env=home, capture_output=True,
                              text=True, timeout=300)
        said = f"{block.where}: {line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert done.returncode in (0, 1), said  # 1: something asked for was not done (documented)
        assert "Traceback" not in done.stderr and "Usage:" not in done.stderr, said


# -- toml -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _of("toml"), ids=lambda block: block.where)
def test_policy_files_load(block: Block, tmp_path: Path):
    path = tmp_path / "policy.toml"
    path.write_text(block.code)
    assert not load_policy(path).is_empty()
