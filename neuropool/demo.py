"""A realistic raw session with known ground truth, as a lab server holds it after a recording.

One Neuropixels 1.0 probe (384 channels + the sync channel, 30 kHz, int16), written the way
SpikeGLX writes it (``.bin`` + ``.meta`` with the real keys) and then compressed with mtscomp to
``.cbin`` + ``.ch``, as IBL's servers keep it. The voltage comes from SpikeInterface's
ground-truth generator on the real NP1 geometry, so the true units (spike trains and positions)
are known and saved beside the session. Beside it, the probe's LF stream (2.5 kHz, as NP1
probes record their LFP): theta (8 Hz, 80 µV, phase drifting with depth) and delta (2 Hz,
40 µV) oscillations plus 8 µV of white noise (:data:`LF_CONTENT`). A probe trajectory (IBL
convention) is in ``session.json``. Memory stays bounded: the recording is generated and written
one second at a time.

Layout::

    <subject>_<date>_<number>/
        session.json
        raw_ephys_data/probe00/_spikeglx_ephysData_g0_t0.imec0.ap.{cbin,ch,meta}
        raw_ephys_data/probe00/_spikeglx_ephysData_g0_t0.imec0.lf.{cbin,ch,meta}
        ground_truth/probe00/sorting/     SpikeInterface numpy-folder sorting (true spike trains)
        ground_truth/probe00/units.pqt    true unit positions on the probe (x, y, z µm)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuropool.errors import ConfigError
from neuropool.io.readers.spikeglx import (
    channel_layout,
    make_np1_lf_meta,
    make_np1_meta,
    write_meta,
)

#: IBL's "repeated site" insertion: entry (ML, AP, DV) µm from bregma, depth µm, angles degrees.
DEMO_TRAJECTORY = {"x": -2243.0, "y": -2000.0, "z": 0.0, "depth": 4000.0, "theta": 15.0, "phi": 180.0}

STEM = "_spikeglx_ephysData_g0_t0.imec0.ap"
LF_STEM = "_spikeglx_ephysData_g0_t0.imec0.lf"
LF_RATE = 2500.0
#: The LF stream's content: (frequency Hz, amplitude µV) of its oscillations, and its noise µV rms.
LF_CONTENT = {"theta": (8.0, 80.0), "delta": (2.0, 40.0), "noise_uv": 8.0}
SYNC_BIT = 64  # SpikeGLX's sync pulse is bit 6 of the SY0 word


def make_demo_session(
    root: str | Path,
    *,
    duration: float = 20.0,
    n_units: int = 40,
    seed: int = 0,
    subject: str = "demo-mouse",
    noise_uv: float = 6.0,
    compress: bool = True,
) -> Path:
    """Write a demo session under ``root`` and return its folder.

    Parameters
    ----------
    root : path
        Folder to create the session in (created if needed).
    duration : float
        Seconds of recording.
    n_units : int
        Number of true units.
    seed : int
        Seed of the generator: the same seed gives the same session.
    subject : str
        Subject name, the first part of the session folder's name.
    noise_uv : float
        Background noise, µV rms.
    compress : bool
        Compress with mtscomp (``.cbin``) and remove the ``.bin``, as IBL's servers keep data.
    """
    from probeinterface import Probe
    from spikeinterface.core import generate_ground_truth_recording

    if duration <= 0 or duration > 7200:
        raise ConfigError(f"--duration must be between 0 and 7200 s, got {duration}")
    if n_units < 1:
        raise ConfigError(f"n_units must be at least 1, got {n_units}")
    fs = 30000.0
    n_samples = int(round(duration * fs))
    session = Path(root) / f"{subject}_{date.today():%Y-%m-%d}_{seed + 1:03d}"
    if session.exists():
        shutil.rmtree(session)
    raw_dir = session / "raw_ephys_data" / "probe00"
    raw_dir.mkdir(parents=True)

    meta = make_np1_meta(n_samples, fs, file_size_bytes=n_samples * 385 * 2)
    layout = channel_layout(meta)
    ephys = ~layout.is_sync
    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=layout.positions[ephys], shapes="square", shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(int(ephys.sum())))
    recording, gt = generate_ground_truth_recording(
        durations=[duration], sampling_frequency=fs, num_units=n_units, probe=probe, seed=seed,
        generate_sorting_kwargs={"firing_rates": (3.0, 12.0), "refractory_period_ms": 4.0},
        noise_kwargs={"noise_levels": noise_uv, "strategy": "on_the_fly"},
        generate_unit_locations_kwargs={"margin_um": 10.0, "minimum_z": 5.0, "maximum_z": 40.0,
                                        "minimum_distance": 20.0},
    )

    gain = layout.gains_uv[ephys]
    bin_path = raw_dir / f"{STEM}.bin"
    sha1 = hashlib.sha1()
    step = int(fs)
    with open(bin_path, "wb") as f:
        for start in range(0, n_samples, step):
            stop = min(start + step, n_samples)
            volts = recording.get_traces(start_frame=start, end_frame=stop)
            block = np.empty((stop - start, 385), dtype=np.int16)
            block[:, :384] = np.clip(np.round(volts / gain), -32768, 32767)
            t = np.arange(start, stop) / fs
            block[:, 384] = np.where((t % 1.0) < 0.5, SYNC_BIT, 0)
            data = block.tobytes()
            sha1.update(data)
            f.write(data)
    meta = make_np1_meta(n_samples, fs, file_size_bytes=n_samples * 385 * 2,
                         sha1=sha1.hexdigest().upper())
    write_meta(str(raw_dir / f"{STEM}.meta"), meta)
    raw_name = _finish_stream(raw_dir, STEM, fs, compress)
    lf_name = _write_lf_stream(raw_dir, meta, duration, layout.positions[ephys][:, 1], seed, compress)

    truth = session / "ground_truth" / "probe00"
    truth.mkdir(parents=True)
    gt.save(folder=str(truth / "sorting"), format="numpy_folder")
    locations = np.asarray(gt.get_property("gt_unit_locations"))
    pd.DataFrame({"unit_id": [str(u) for u in gt.unit_ids], "x": locations[:, 0],
                  "y": locations[:, 1], "z": locations[:, 2]}).to_parquet(truth / "units.pqt")

    description: dict[str, Any] = {
        "subject": subject,
        "date": f"{date.today():%Y-%m-%d}",
        "number": seed + 1,
        "generated_by": "neuropool demo",
        "duration_s": duration,
        "seed": seed,
        "probes": {
            "probe00": {
                "raw": f"raw_ephys_data/probe00/{raw_name}",
                "lf": f"raw_ephys_data/probe00/{lf_name}",
                "model": "Neuropixels 1.0",
                "serial": meta.get("imDatPrb_sn", ""),
                "trajectory": DEMO_TRAJECTORY,
                "ground_truth": "ground_truth/probe00",
            }
        },
    }
    (session / "session.json").write_text(json.dumps(description, indent=2))
    return session


def _finish_stream(raw_dir: Path, stem: str, fs: float, compress: bool) -> str:
    """Compress ``<stem>.bin`` with mtscomp (removing it) when asked; the data file's name."""
    if not compress:
        return f"{stem}.bin"
    import mtscomp

    bin_path = raw_dir / f"{stem}.bin"
    mtscomp.compress(str(bin_path), str(raw_dir / f"{stem}.cbin"), str(raw_dir / f"{stem}.ch"),
                     sample_rate=fs, n_channels=385, dtype=np.int16, n_threads=2, check_after_compress=False,
                     quiet=True)
    bin_path.unlink()
    return f"{stem}.cbin"


def _write_lf_stream(raw_dir: Path, ap_meta: dict[str, str], duration: float, depths_um: np.ndarray,
                     seed: int, compress: bool) -> str:
    """Write the LF stream (:data:`LF_CONTENT`, 2.5 kHz) beside the AP one; its data file's name."""
    n = int(round(duration * LF_RATE))
    gains = channel_layout(make_np1_lf_meta(ap_meta, n, LF_RATE)).gains_uv[:384]
    rng = np.random.default_rng(seed + 1000)
    (f_theta, a_theta), (f_delta, a_delta) = LF_CONTENT["theta"], LF_CONTENT["delta"]
    theta_phase = np.pi * np.asarray(depths_um) / 2000.0  # half a cycle over 2 mm of probe
    delta_phase = rng.uniform(0, 2 * np.pi)
    sha1 = hashlib.sha1()
    with open(raw_dir / f"{LF_STEM}.bin", "wb") as f:
        for start in range(0, n, int(LF_RATE)):
            t = np.arange(start, min(start + int(LF_RATE), n)) / LF_RATE
            uv = (a_theta * np.sin(2 * np.pi * f_theta * t[:, None] + theta_phase)
                  + a_delta * np.sin(2 * np.pi * f_delta * t[:, None] + delta_phase)
                  + rng.normal(0.0, LF_CONTENT["noise_uv"], size=(t.size, 384)))
            block = np.empty((t.size, 385), dtype=np.int16)
            block[:, :384] = np.clip(np.round(uv / gains), -32768, 32767)
            block[:, 384] = np.where((t % 1.0) < 0.5, SYNC_BIT, 0)
            sha1.update(block.tobytes())
            f.write(block.tobytes())
    write_meta(str(raw_dir / f"{LF_STEM}.meta"), make_np1_lf_meta(ap_meta, n, LF_RATE, sha1.hexdigest()))
    return _finish_stream(raw_dir, LF_STEM, LF_RATE, compress)
