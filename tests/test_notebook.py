"""The example notebook runs top to bottom in a kernel of this interpreter, and results show their figures."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explain_digits.ipynb"


def _kernel_manager():
    """A ``python3`` kernel started by this very interpreter (not whatever ``python`` is first on PATH)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 display_name="Python 3 (this interpreter)", language="python")
    return km


@pytest.mark.slow
def test_example_notebook_runs_and_every_result_draws_itself():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    where = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=120, km=_kernel_manager(), resources=where).execute()
    assert time.perf_counter() - start < 60
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    results = [c for c in code if c.source.startswith("ex.") and "summary" not in c.source]
    for cell in results:  # each result cell shows a PNG (its figure), not only a repr
        pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        assert pngs, cell.source
        assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    summary = next(c for c in code if "summary" in c.source)
    assert any("text/html" in o.get("data", {}) for o in summary.outputs)


def test_results_display_their_figure(tiny_net, images):
    from cnn_explain.attribution import saliency
    from cnn_explain.plotting._display import FIGURES, Displayable, figure_of

    r = saliency(tiny_net, images)
    assert isinstance(r, Displayable) and r._repr_png_()[:4] == b"\x89PNG"
    assert len(figure_of(r).axes) == 3 * len(r)  # per row: the image, the map and its colour bar
    with pytest.raises(TypeError, match="no figure"):
        figure_of(object())
    assert set(FIGURES) >= {"Attribution", "SanityResult", "Embedding", "StyleResult", "MaximizeResult"}
