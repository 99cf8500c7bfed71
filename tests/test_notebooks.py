"""Every notebook runs, on tiny settings, so that none can rot; the committed ones carry their
outputs and figures, and notebooks and benchmarks use only public names."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: A private module of either package, imported or reached as an attribute (`jaxlat._shipped`,
#: `from profilers._models import ...`, `python -m profilers._cli`, `from jaxlat import _io`).
PRIVATE = re.compile(
    r"\b(?:jaxlat|profilers)(?:\.[A-Za-z]\w*)*\._[a-z]\w*|\bfrom (?:jaxlat|profilers)(?:\.\w+)* import \(?\s*_[a-z]\w*"
)


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.delenv("JAXLAT_NOTEBOOK_FULL", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert any(
        "image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs
    ), "no inline figure"


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"01_quickstart", "02_regressors"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_its_outputs_and_an_inline_figure(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "not executed (or not every cell)"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no inline figure"
    assert ".savefig(" not in _code(nb) and "matplotlib.use(" not in _code(nb), "figures must show inline"
    assert any(c.cell_type == "markdown" for c in nb.cells[1:]), "no narration after the title"


def test_notebooks_and_benchmarks_use_only_public_names():
    sources = {p: _code(nbformat.read(p, as_version=4)) for p in NOTEBOOKS}
    sources |= {p: p.read_text() for p in sorted((ROOT / "benchmarks").glob("*.py"))}
    found = {
        str(p.relative_to(ROOT)): sorted(set(PRIVATE.findall(s)))
        for p, s in sources.items()
        if PRIVATE.search(s)
    }
    assert not found
