"""``Run.progress()`` in a real Jupyter kernel: a widget progress bar that reaches the end.

The notebook runs in a fresh ``python3`` kernel started by nbclient, as a scientist's would;
the widget state the kernel leaves behind is what the browser would draw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the Jupyter test needs the test extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the Jupyter test needs the test extra (nbclient)")
pytest.importorskip("ipykernel", reason="the Jupyter test needs the test extra (ipykernel)")
pytest.importorskip("ipywidgets", reason="the Jupyter test needs the notebook extra (ipywidgets)")

ROOT = Path(__file__).resolve().parents[2]


def widget_models(nb) -> dict[str, dict]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {k: v for k, v in state.items()}


@pytest.mark.timeout(180)
def test_progress_draws_a_widget_bar_in_jupyter_that_ends_full(tmp_path):
    setup = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
import neuropool
from tests.graphs.test_run_api import toy_graph, toy_session

raw = toy_session(Path({str(tmp_path)!r}) / "raw", "s1", 2.0)
pool = neuropool.connect("inprocess", gpus=0)
run = pool.submit(toy_graph(raw, slow=0.3, n_slow=4), out={str(tmp_path / "derived")!r})
"""
    watch = "report = run.progress(interval=0.1)\nprint('ok' if report.ok else 'failed', len(report.results))"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(watch)]
    nbclient.NotebookClient(nb, timeout=150, kernel_name="python3", store_widget_state=True).execute()

    outputs = nb.cells[1].outputs
    assert [o.get("text") for o in outputs if o["output_type"] == "stream"] == ["ok 4\n"]
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1, outputs  # one bar, drawn as a widget (not text lines)
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    models = widget_models(nb)
    bars = [m["state"] for m in models.values() if m["model_name"] == "FloatProgressModel"]
    assert len(bars) == 1
    assert bars[0]["max"] == 4 and bars[0]["value"] == 4 and bars[0]["bar_style"] == "success"
    labels = [m["state"]["value"] for m in models.values() if m["model_name"] == "HTMLModel"]
    assert any("4/4" in text for text in labels), json.dumps(labels)
    assert any(text.startswith("s1_processed_") for text in labels), json.dumps(labels)
