"""kilosort4 on a GPU, on a demo session: runs only where a CUDA GPU and kilosort4 are present.

Install on a GPU machine with ``pip install kilosort torch`` (a CUDA build of torch), then
``python -m pytest -m slow tests/tasks/test_kilosort_gpu.py``.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed (kilosort4 needs it: pip install kilosort torch)"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (kilosort4's GPU run needs one)"
    from spikeinterface.sorters import installed_sorters

    if "kilosort4" not in installed_sorters():
        return "kilosort4 is not installed (pip install kilosort)"
    return None


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_kilosort4_sorts_the_demo_on_the_gpu(tmp_path):
    from neuropool.cli import main
    from neuropool.io.store import DerivedAsset
    from neuropool.summary import ground_truth_match

    cfg = tmp_path / "ks4.yaml"
    cfg.write_text("sort:\n  sorter: kilosort4\n")
    code = main(["demo", "--out", str(tmp_path), "--duration", "30", "--units", "20", "--seed", "3",
                 "--config", str(cfg)])
    assert code == 0
    session = next(p for p in tmp_path.iterdir() if (p / "session.json").exists())
    asset = DerivedAsset.find_latest(str(tmp_path), str(session))
    sort = asset.commits()["sort[probe00]"]
    assert sort["parameters"]["sorter"] == "kilosort4" and sort["resources"]["gpus"] == 1
    gt = ground_truth_match(asset.dataset_url("ephys.sorting", "probe00"),
                            str(session / "ground_truth" / "probe00"),
                            asset.dataset_url("units.locations", "probe00"))
    assert gt["n_recovered"] >= 14, gt  # of 20: a floor, as test_end_to_end sets one for the CPU default
