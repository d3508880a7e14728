"""docs/example-notebook.ipynb runs top to bottom in a real kernel (nbclient), with its displays.

The notebook submits, watches, collects and cleans up, with a scikit-learn
search through the joblib backend; its last cell asserts that nothing is left.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "example-notebook.ipynb"

if os.environ.get("CI"):  # in CI a missing kernel or nbclient is a failure, never a skip
    import ipykernel  # noqa: F401
    import nbclient  # noqa: F401
    import sklearn  # noqa: F401

pytestmark = pytest.mark.timeout(600)


def test_the_example_notebook_runs_and_shows_jobs_as_html(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("sklearn")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    (tmp_path / "kernels" / "rxjobs-test").mkdir(parents=True)
    (tmp_path / "kernels" / "rxjobs-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rxjobs test", "language": "python"}))
    km = KernelManager(kernel_name="rxjobs-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, km=km, timeout=500, resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert any("state state-finished" in h and "tasks" in h for h in html)  # the job, the list
    assert any("cleanup:" in h and "removed" in h for h in html)  # the cleanup report
    assert any("a cleanup without force frees" in h for h in html)  # the disk-use report
    assert any(out.output_type == "display_data" and "finished" in out["data"].get("text/plain", "")
               for out in outputs)  # the waiting display, in its last state
    assert "[0, 1, 4, 9, 16, 25, 36, 49]" in json.dumps([out.get("data", {}) for out in outputs])
