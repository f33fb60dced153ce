"""Small NP1 sessions written here (SpikeGLX ``.bin``/``.meta``, mtscomp ``.cbin``/``.ch``), and
helpers to run the standard graph on them and to check a derived asset.

The recordings are 385-column int16 (384 AP + sync) at 30 kHz, a fraction of a second long;
session-scoped fixtures write each one once, tests copy them before damaging anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mtscomp
import numpy as np
import pytest

from neuropool.cluster import InProcessPool
from neuropool.graphs import load_config, run_graph, standard_graph
from neuropool.graphs.runner import RunReport
from neuropool.io import timeseries
from neuropool.io.readers.spikeglx import make_np1_meta, write_meta
from neuropool.io.session import open_session
from neuropool.io.store import DerivedAsset

RATE = 30_000.0
N_COLUMNS = 385
STEM = "rec_g0_t0.imec0.ap"
#: mtscomp chunks of 0.1 s (3000 samples): they do not line up with the zarr chunks under test.
MTSCOMP_CHUNK_S = 0.1


def best_time(run: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``run``, after one call to warm up."""
    run()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def make_np1_data(n_samples: int, seed: int = 0) -> np.ndarray:
    """Noise with a common-mode drift, spikes, int16 extremes and a sync square wave.

    The noise (6 bits = 14 µV RMS, white) is as loud as a Neuropixels 1.0 AP band; louder white
    noise would exceed IBL's 0.02 µV²/Hz above 0.8 Nyquist on every channel, and bad-channel
    detection would rightly refuse the whole probe as noisy.
    """
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 6, (n_samples, N_COLUMNS))
    data += 40 * np.sin(2 * np.pi * 7 * np.arange(n_samples) / RATE)[:, None]  # removed by the high-pass
    data = data.astype(np.int16)
    wave = (np.sin(np.linspace(0, np.pi, 30)) * -120).astype(np.int16)
    for t in rng.integers(0, n_samples - 30, 60):
        c = int(rng.integers(0, 380))
        data[t : t + 30, c : c + 4] += wave[:, None]
    data[:, -1] = (np.arange(n_samples) // 1500 % 2) * 64  # SY0: bit 6 toggling
    # int16 extremes whose time differences wrap around (in SY0, which preprocessing drops, so
    # that they do not dominate the preprocessed RMS)
    data[7:11, -1] = [32767, -32768, 32767, -32768]
    return data


def write_np1_recording(folder: Path, data: np.ndarray, *, compress: bool = True, stem: str = STEM) -> Path:
    """Write ``data`` as SpikeGLX ``.bin`` + ``.meta``; with ``compress`` replace the ``.bin`` by
    an mtscomp ``.cbin`` + ``.ch``. Returns the data file (``.cbin`` or ``.bin``)."""
    folder.mkdir(parents=True, exist_ok=True)
    bin_path = folder / f"{stem}.bin"
    data.astype("<i2").tofile(bin_path)
    sha1 = hashlib.sha1(data.astype("<i2").tobytes()).hexdigest()
    write_meta(str(folder / f"{stem}.meta"), make_np1_meta(len(data), RATE, file_size_bytes=data.nbytes, sha1=sha1))
    if not compress:
        return bin_path
    cbin = folder / f"{stem}.cbin"
    mtscomp.compress(
        bin_path, cbin, folder / f"{stem}.ch", sample_rate=RATE, n_channels=N_COLUMNS,
        dtype=np.int16, chunk_duration=MTSCOMP_CHUNK_S, n_threads=1, check_after_compress=False,
        quiet=True,
    )
    bin_path.unlink()
    return cbin


def write_session_json(session: Path, probes: dict[str, str], **extra: Any) -> None:
    """``session.json`` naming each probe's raw recording relative to the session folder."""
    doc = {"subject": "test-mouse", **extra, "probes": {p: {"raw": raw} for p, raw in probes.items()}}
    (session / "session.json").write_text(json.dumps(doc))


def make_session(root: Path, data: np.ndarray, *, compress: bool = True) -> Path:
    """A session folder with one probe (``probe00``) and its ``session.json``."""
    session = root
    raw = write_np1_recording(session / "raw_ephys_data" / "probe00", data, compress=compress)
    write_session_json(session, {"probe00": raw.relative_to(session).as_posix()})
    return session


def run_standard(
    session: Path | str,
    out: Path,
    *,
    until: str = "preprocess",
    config: dict[str, Any] | None = None,
    asset: DerivedAsset | None = None,
) -> RunReport:
    """Run the standard graph on ``session`` up to ``until`` with an :class:`InProcessPool`.

    Each report gets ``.blocks``: node id -> number of work blocks it was split into.
    """
    cfg = load_config(config or {})
    sess = open_session(str(session))
    graph = standard_graph(sess, cfg).subset(until=until)
    if asset is None:
        asset = DerivedAsset.open_or_create(str(out), sess.url, label=cfg.label)
    blocks: dict[str, int] = {}

    def progress(event: str, node: str, info: dict[str, Any]) -> None:
        if event == "start":
            blocks[node] = info["blocks"]

    report = run_graph(graph, asset, InProcessPool(gpus=0), progress=progress)
    report.blocks = blocks  # type: ignore[attr-defined]
    return report


def tree_hash(path: Path | str) -> str:
    """SHA-1 over every file (relative name and bytes) below ``path``."""
    root = Path(path)
    digest = hashlib.sha1()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def commit_files(asset: DerivedAsset) -> dict[str, str]:
    """Marker file name -> its text, for every commit marker of ``asset``."""
    folder = Path(asset.url) / "_commits"
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def assert_asset_consistent(asset: DerivedAsset) -> dict[str, dict[str, Any]]:
    """Every commit marker points to complete, readable outputs; ``processing.json`` lists exactly
    the committed nodes; no half-written marker is left. Returns the commits."""
    commits = asset.commits()
    folder = Path(asset.url) / "_commits"
    if folder.is_dir():
        leftovers = [p.name for p in folder.iterdir() if not p.name.endswith(".json")]
        assert not leftovers, f"stray files among the commit markers: {leftovers}"
    for nid, rec in commits.items():
        assert rec["outputs"], f"{nid}: a commit without outputs"
        for name, url in rec["outputs"].items():
            assert Path(url).exists(), f"{nid} is committed but its output {name} ({url}) is gone"
            if url.endswith(".zarr"):
                store = timeseries.TimeseriesStore(url)
                shape = (rec["summary"]["n_samples"], rec["summary"]["n_channels"])
                assert store.traces.shape == shape, f"{nid}: {url} has the wrong shape"
                assert store.traces.nchunks_initialized == store.traces.nchunks, f"{nid}: {url} lacks chunks"
                values = store.traces[:]  # every chunk decodes
                if values.dtype.kind == "f":
                    assert np.isfinite(values).all(), f"{nid}: {url} holds non-finite samples"
                assert timeseries.open_dataset(url).sizes["time"] == shape[0]  # consolidated, opens
    listed = [p["node"] for p in asset.read_processing()["processing_pipeline"]["data_processes"]]
    assert sorted(listed) == sorted(commits), (
        f"processing.json lists {sorted(listed)} but the committed nodes are {sorted(commits)}"
    )
    return commits


@pytest.fixture(scope="session")
def np1_data() -> np.ndarray:
    """0.6 s of NP1 data: 18,000 samples x 385 columns."""
    return make_np1_data(18_000, seed=0)


@pytest.fixture(scope="session")
def cbin_session(tmp_path_factory, np1_data) -> Path:
    """A session with ``session.json`` and one mtscomp-compressed probe (do not modify it)."""
    return make_session(tmp_path_factory.mktemp("np1-cbin") / "mouse_2024-01-01_001", np1_data)


@pytest.fixture(scope="session")
def bin_session(tmp_path_factory, np1_data) -> Path:
    """The same recording as :func:`cbin_session`, as a SpikeGLX ``.bin`` (do not modify it)."""
    return make_session(tmp_path_factory.mktemp("np1-bin") / "mouse_2024-01-01_002", np1_data, compress=False)


@pytest.fixture(scope="session")
def small_data() -> np.ndarray:
    """0.2 s of NP1 data (6,000 samples) for the error tests."""
    return make_np1_data(6_000, seed=1)


@pytest.fixture(scope="session")
def small_templates(tmp_path_factory, small_data) -> dict[str, Path]:
    """Pristine small sessions (``cbin`` and ``bin``) that tests copy before damaging them."""
    root = tmp_path_factory.mktemp("templates")
    return {
        "cbin": make_session(root / "cbin", small_data),
        "bin": make_session(root / "bin", small_data, compress=False),
    }


@pytest.fixture
def fresh_session(tmp_path, small_templates):
    """``fresh_session(kind="cbin")``: a private copy of a small session, safe to damage."""

    def copy(kind: str = "cbin", name: str = "mouse_2024-01-01_001") -> Path:
        dest = tmp_path / "sessions" / name
        shutil.copytree(small_templates[kind], dest)
        return dest

    return copy
