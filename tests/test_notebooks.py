"""Every notebook in notebooks/ runs top to bottom on the demo data, so they never rot.

They locate the warehouse the way the CLI does (``CXLOOP_HOME``); here that is a folder filled by the
main job once for this module. A failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    from pipelines.flows import cx_loop_flow

    home = tmp_path_factory.mktemp("notebook-home")
    cx_loop_flow(db=str(home / "cx.duckdb"), home=str(home))
    return home


def test_there_are_notebooks_for_exploring_and_for_models() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert any("explore" in n for n in names) and any("model" in n for n in names), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLOOP_HOME", str(demo_home))  # the kernel inherits the environment
    monkeypatch.delenv("CXLOOP_DB", raising=False)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert str(demo_home / "cx.duckdb") in text  # it used the warehouse it was pointed at
    assert any("image/svg+xml" in o.get("data", {}) or "<svg" in str(o.get("data", {}).get("text/html", ""))
               for o in outputs), "no chart drawn"
