"""``neuropool report``: the HTML QC page of a derived asset, loaded in a real headless Chromium.

The page is checked the way a reader sees it: Debian's ``chromium`` loads the file and is driven
over the Chrome DevTools protocol through ``--remote-debugging-pipe`` (JSON messages separated by
NUL bytes on file descriptors 3 and 4, so no port, no websocket client and nothing beyond the
standard library). The tests assert that the page loads without a console error or exception,
requests nothing but itself and its ``data:`` images, that every ``<img>`` decodes
(``naturalWidth > 0``), and that the numbers it shows (read back from the rendered DOM by their
ids and ``data-`` attributes) are those of ``processing.json`` and ``metrics.pqt``. Without
chromium those tests skip, saying so; the rest run.

Fast tests use a small real asset: decompress, preprocess and raw_qc run on 0.6 s of NP1 data,
and a failure of ``sort`` recorded through the store's own API (what the runner records), with
the standard graph as the run's graph; so qc, localize and export "did not run". The slow tests
(``-m slow``) process a 4 s generated demo session through the whole standard graph (sorting
with tridesclous2), then localize it again with a synthetic Allen annotation volume.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest

from neuropool import cli
from neuropool.io.store import DerivedAsset
from neuropool.report import REPORT_NAME, default_out, register_report, write_report
from neuropool.report.collect import collect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SORT_ERROR = "SortingError: tridesclous2 found <b>no units</b> & gave up"


# -- Chromium over the DevTools protocol --------------------------------------------------------


class Chromium:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (stdlib only)."""

    def __init__(self, exe: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "about:blank"]
        self.log_path = profile / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        # the protocol pipe is fds 3 (commands in) and 4 (answers out) of the browser
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', *args],
                                     stdin=to_chrome_r, stdout=from_chrome_w, stderr=self._log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send a command and return its result (events meanwhile go to ``self.events``)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first event named ``event`` (received already, or waited for)."""
        found = next((m for m in self.events if m.get("method") == event), None)
        deadline = time.monotonic() + timeout
        while found is None:
            message = self._receive(deadline)
            self.events.append(message)
            found = message if message.get("method") == event else None
        return found

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer; its log: {self.log_path.read_text()[-2000:]}")
            if select.select([self._from_chrome], [], [], left)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited; its log: {self.log_path.read_text()[-2000:]}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def load(self, path: Path) -> dict[str, Any]:
        """Open ``path`` in a new tab, wait for its load event; what happened, and the DOM's facts."""
        self.events = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        facts = self.send("Runtime.evaluate", {"expression": DOM_FACTS, "returnByValue": True},
                          session=session)["result"]["value"]
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=session)["data"]
        self.send("Target.closeTarget", {"targetId": target})
        problems = [m["params"] for m in self.events if m.get("method") == "Runtime.exceptionThrown"
                    or (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] in ("error", "assert"))
                    or (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")]
        requests = [m["params"]["request"]["url"] for m in self.events
                    if m.get("method") == "Network.requestWillBeSent"]
        return {"facts": facts, "problems": problems, "requests": requests, "screenshot_b64": len(shot)}

    def close(self) -> None:
        """Close the browser (killing it if it does not exit) and the pipes."""
        with suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._log.close()


#: Read back from the rendered page: what a reader sees, by the ids and data- attributes.
DOM_FACTS = """(() => {
  const all = (s) => Array.from(document.querySelectorAll(s));
  const text = (el) => el ? el.textContent.trim() : null;
  return {
    images: all('img').map(i => ({figure: i.closest('figure') ? i.closest('figure').id : null,
                                  complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                                  data: i.src.startsWith('data:image/png;base64,')})),
    scripts: all('script').length,
    external: all('link[href], [src]').map(e => e.getAttribute('href') || e.getAttribute('src'))
                .filter(u => !u.startsWith('data:')),
    pipeline_version: text(document.getElementById('pipeline-version')),
    nodes: all('tr[data-node]').map(r => ({node: r.dataset.node, state: r.dataset.state,
                                          wall: r.dataset.wallS, cells: Array.from(r.cells).map(text)})),
    versions: all('tr[data-task-node]').map(r => [r.dataset.taskNode, r.dataset.version]),
    found: all('[id$="-units-found"]').map(e => [e.id, text(e)]),
    passing: all('[id$="-units-passing"]').map(e => [e.id, text(e)]),
    ibl: all('td[data-ibl-label]').map(e => [e.dataset.probe, e.dataset.iblLabel, text(e)]),
    channel_labels: all('td[data-label]').map(e => [e.dataset.probe, e.dataset.label, text(e)]),
    missing: all('.missing[data-section]').map(e => [e.dataset.section, text(e)]),
    thresholds: text(document.getElementById('probe00-thresholds')),
    regions: all('tr[data-region]').map(r => [r.dataset.region, Number(r.dataset.units), Number(r.dataset.passing),
                                             Array.from(r.cells).map(text)]),
    figure_errors: all('[data-figure-error]').map(text),
    failures: all('[data-failed-node]').map(e => ({node: e.dataset.failedNode, text: text(e.querySelector('pre')),
                                                 elements: e.querySelectorAll('pre b').length})),
    unit_rows: all('tr[data-unit]').map(r => Array.from(r.cells).map(text)),
    headings: all('h2, h3').map(text),
    ragged_tables: all('table').filter(t => t.tHead && Array.from(t.tBodies).some(b => Array.from(b.rows).some(
      r => Array.from(r.cells).reduce((n, c) => n + c.colSpan, 0) !== t.tHead.rows[0].cells.length)))
      .map(t => t.id || t.outerHTML.slice(0, 200)),
  };
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium): the report is "
                    "checked in a real browser")
    chrome = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    chrome.send("Browser.getVersion")
    yield chrome
    chrome.close()


def check_loads_cleanly(page: dict[str, Any], path: Path) -> dict[str, Any]:
    """No console error, no request but the page and its data: images, every image decoded."""
    facts = page["facts"]
    assert page["problems"] == [], page["problems"]
    assert [u for u in page["requests"] if not u.startswith("data:")] == [path.resolve().as_uri()]
    assert facts["scripts"] == 0 and facts["external"] == []
    assert facts["images"], "no figure on the page"
    for image in facts["images"]:
        assert image["data"] and image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert facts["figure_errors"] == []
    assert facts["ragged_tables"] == []  # every row as wide as its table's header
    assert page["screenshot_b64"] > 1000
    return facts


def check_nodes(facts: dict[str, Any], doc: dict[str, Any]) -> None:
    """Every node committed in ``doc`` (a processing.json) shows as committed with its recorded
    times and version."""
    rows = {r["node"]: r for r in facts["nodes"]}
    versions = dict(facts["versions"])
    for proc in doc["processing_pipeline"]["data_processes"]:
        row = rows[proc["node"]]
        assert row["state"] == "committed", row
        assert float(row["wall"]) == pytest.approx(proc["wall_s"], abs=5e-4)
        assert row["cells"][4] == f"{proc['wall_s']:.3f}"  # the cell a reader sees
        assert row["cells"][2:4] == [proc["start_date_time"].replace("T", " "), proc["end_date_time"].replace("T", " ")]
        assert versions[proc["node"]] == proc["version"]
    assert facts["pipeline_version"] == doc["processing_pipeline"]["pipeline_version"]


# -- a small asset: raw data processed, the sorting failed --------------------------------------


@pytest.fixture(scope="module")
def small_asset(tmp_path_factory) -> DerivedAsset:
    from neuropool.cluster import InProcessPool
    from neuropool.graphs import load_config, run_graph, standard_graph
    from neuropool.io.session import open_session
    from tests.tasks.conftest import make_np1_data, make_session

    root = tmp_path_factory.mktemp("report-small")
    session = open_session(str(make_session(root / "mouse_2024-01-01_001", make_np1_data(18_000, seed=0))))
    graph = standard_graph(session, load_config({}))
    asset = DerivedAsset.open_or_create(str(root / "derived"), session.url)
    pool = InProcessPool(gpus=0)
    for until in ("preprocess", "raw_qc"):
        assert run_graph(graph.subset(until=until), asset, pool).ok
    # as the runner records a failed sort: the failure record, and the graph that ran
    asset.record_failure("sort[probe00]", SORT_ERROR, "Traceback (most recent call last):\n  ...\n" + SORT_ERROR)
    asset.write_processing(graph.to_dict())
    return asset


def test_sections_whose_task_did_not_run_say_why(small_asset):
    data = collect(small_asset)
    probe = data["probes"]["probe00"]
    assert probe["meta"]["n_channels"] == 385 and probe["meta"]["sampling_frequency"] == 30_000.0
    assert probe["meta"]["duration_s"] == pytest.approx(0.6)
    assert probe["raw_qc"]["spike_rms"].shape == (384,) and len(probe["raw_qc"]["y"]) == 384
    assert sum(probe["labels"]["counts"].values()) == 384
    for section, node in (("drift", "export"), ("units", "qc"), ("locations", "localize")):
        assert probe[section] == {"note": f"{node}[probe00] did not run: upstream sort[probe00] failed"}
    assert [f["node"] for f in data["failures"]] == ["sort[probe00]"]
    assert data["failures"][0]["error"] == SORT_ERROR
    states = {n["node"]: n["state"] for n in data["nodes"]}
    assert states["sort[probe00]"] == "failed" and states["nwb[probe00]"] == "not run"
    assert states["raw_qc[probe00]"] == states["preprocess[probe00]"] == "committed"


def test_small_report_in_chromium(small_asset, browser, tmp_path):
    path = Path(write_report(small_asset, str(tmp_path / "report.html")))
    facts = check_loads_cleanly(browser.load(path), path)
    check_nodes(facts, small_asset.read_processing())
    assert {i["figure"] for i in facts["images"]} == {"timeline", "probe00-rms", "probe00-spectra"}
    missing = dict(facts["missing"])
    assert set(missing) == {"probe00-drift", "probe00-units", "probe00-locations"}
    assert "export[probe00] did not run: upstream sort[probe00] failed" in missing["probe00-drift"]
    rows = {r["node"]: r for r in facts["nodes"]}
    assert rows["sort[probe00]"]["state"] == "failed" and SORT_ERROR in rows["sort[probe00]"]["cells"][-1]
    assert rows["qc[probe00]"]["state"] == "not run"
    # the error is shown as the text it is, not as markup
    assert facts["failures"] == [{"node": "sort[probe00]", "text": SORT_ERROR, "elements": 0}]
    labels = np.load(Path(small_asset.url) / "probe00" / "_iblqc_ephysChannels.labels.npy")
    shown = {label: int(n) for _, label, n in facts["channel_labels"]}
    assert shown == {name: int(np.count_nonzero(labels == code))
                     for code, name in enumerate(("good", "dead", "noisy", "outside"))}


def test_figures_of_degenerate_data_are_drawn():
    """NaN metrics (short recordings), a single unit, flat spectra: figures, not exceptions."""
    import base64
    import io

    from matplotlib.image import imread

    from neuropool.report import figures

    metrics = pd.DataFrame({"unit_id": ["7"], "amplitude_cutoff": [np.nan], "presence_ratio": [1.0],
                            "isi_violations_ratio": [0.0], "firing_rate": [3.0], "passes_qc": [False],
                            "ibl_label": [1 / 3], "ibl_amp_median_uv": [np.nan]})
    units = {"metrics": metrics, "n_units": 1, "n_passing": 0, "by_ibl_label": {"0": 0, "0.33": 1, "0.67": 0, "1": 0},
             "thresholds": {"amplitude_cutoff": {"lt": 0.1}, "presence_ratio": {"gt": 0.8}},
             "ibl": {"min_amplitude_uv": 50.0}}
    n = 4
    raw = {"y": np.arange(n) * 20.0, "spike_rms": np.full(n, np.nan), "lfp_rms": np.ones(n),
           "time_rms": np.ones((1, n)), "timestamps": np.array([0.5]), "ap_freqs": np.linspace(0, 15000, 9),
           "ap_power": np.full((9, n), np.nan), "lf_freqs": np.linspace(0, 1250, 9), "lf_power": np.ones((9, n))}
    drift = {"times": np.array([]), "depths": np.array([]), "amps_uv": np.array([]), "n_spikes": 0, "n_shown": 0}
    for uri in (figures.metric_distributions(units), figures.yield_bars(units), figures.raw_rms(raw, None),
                figures.spectra(raw), figures.drift_map(drift), figures.timeline([])):
        if uri is None:  # nothing to draw: no figure at all
            continue
        image = imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture
def report_cli(monkeypatch):
    """``neuropool.cli.main`` with ``report`` registered (as cli.py does once it is wired in)."""
    import argparse

    build = cli.build_parser

    def with_report() -> argparse.ArgumentParser:
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "report" not in sub.choices:
            register_report(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", with_report)
    return cli.main


def test_cli_names_what_is_not_an_asset(report_cli, tmp_path, capsys):
    missing_path = tmp_path / "mouse_2024-01-01_001_processed_2026-01-01_00-00-00"
    assert report_cli(["report", str(missing_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuropool: error: ") and str(missing_path) in err
    assert "no such derived asset, session folder or file" in err
    (tmp_path / "empty").mkdir()
    assert report_cli(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "neither a derived asset" in err
    assert not list(tmp_path.rglob("*.html"))


def test_cli_writes_into_the_asset_or_where_told(report_cli, small_asset, tmp_path, capsys):
    inside = Path(small_asset.url) / REPORT_NAME
    try:
        assert report_cli(["report", small_asset.url]) == 0
        assert capsys.readouterr().out.strip() == f"report written: {inside}"
        assert inside.read_text().startswith("<!DOCTYPE html>")
    finally:
        inside.unlink(missing_ok=True)
    out = tmp_path / "reports" / "small.html"
    assert report_cli(["report", small_asset.url, "--out", str(out)]) == 0
    assert "sort[probe00]" in out.read_text() and not inside.exists()
    assert report_cli(["report", small_asset.url, "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder" in capsys.readouterr().err


def test_an_asset_elsewhere_is_read_through_fsspec_and_never_written(small_asset, tmp_path, monkeypatch):
    fs = fsspec.filesystem("memory")
    remote = f"memory://report-test-{os.getpid()}/{Path(small_asset.url).name}"
    fs.put(small_asset.url + "/", remote.split("://")[1] + "/", recursive=True)
    try:
        before = sorted(fs.find(remote))
        asset = DerivedAsset(remote)
        local, there = collect(small_asset)["probes"]["probe00"], collect(asset)["probes"]["probe00"]
        np.testing.assert_array_equal(there["raw_qc"]["ap_power"], local["raw_qc"]["ap_power"])
        np.testing.assert_array_equal(there["labels"]["labels"], local["labels"]["labels"])
        assert there["meta"] == local["meta"]
        monkeypatch.chdir(tmp_path)
        assert default_out(asset) == str(tmp_path / f"{asset.name}.{REPORT_NAME}")
        written = Path(write_report(asset))
        assert written.parent == tmp_path and "probe00-spectra" in written.read_text()
        assert sorted(fs.find(remote)) == before
    finally:
        fs.rm(remote.split("://")[1].split("/")[0], recursive=True)


# -- the whole pipeline on a generated session (slow) --------------------------------------------


#: QC thresholds for a 4 s recording: AIND's, less amplitude_cutoff, which SpikeInterface leaves
#: NaN (so failing) for a unit of fewer than 100 spikes, that is every unit of so short a recording;
#: with an SNR floor instead. The report must show and draw these, not the defaults.
SHORT_RECORDING_QC = {"isi_violations_ratio": "< 0.5", "presence_ratio": "> 0.8", "snr": "> 4"}


@pytest.fixture(scope="module")
def demo_asset(tmp_path_factory):
    from neuropool.demo import make_demo_session

    out = tmp_path_factory.mktemp("report-demo")
    session = make_demo_session(out, duration=4.0, n_units=8, seed=2)
    config = out / "short.yaml"
    config.write_text("qc:\n  thresholds:\n    isi_violations_ratio: {lt: 0.5}\n"
                      "    presence_ratio: {gt: 0.8}\n    snr: {gt: 4}\n")
    assert cli.main(["run", str(session), "--out", str(out), "--cluster", "inprocess", "--config", str(config)]) == 0
    return session, out, DerivedAsset.find_latest(str(out), str(session)), config


def check_units(facts: dict[str, Any], asset: DerivedAsset, doc: dict[str, Any]) -> pd.DataFrame:
    """Units found, passing QC and per IBL label as in ``doc`` (processing.json) and metrics.pqt."""
    qc = next(p for p in doc["processing_pipeline"]["data_processes"] if p["node"] == "qc[probe00]")["summary"]
    metrics = pd.read_parquet(Path(asset.url) / "probe00" / "qc" / "metrics.pqt")
    assert facts["found"] == [["probe00-units-found", str(qc["n_units"])]] and qc["n_units"] == len(metrics)
    assert facts["passing"] == [["probe00-units-passing", str(qc["n_passing"])]]
    assert qc["n_passing"] == int(metrics["passes_qc"].sum())
    assert {label: int(n) for _, label, n in facts["ibl"]} == qc["units_by_ibl_label"]
    assert facts["thresholds"] == "; ".join(f"{c} {b}" for c, b in qc["thresholds"].items())
    assert qc["thresholds"] == SHORT_RECORDING_QC
    assert 0 < len(facts["unit_rows"]) == qc["n_passing"]
    assert sorted(r[0] for r in facts["unit_rows"]) == sorted(metrics.loc[metrics["passes_qc"], "unit_id"].astype(str))
    return metrics


@pytest.fixture(scope="module")
def no_atlas_page(demo_asset, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The report of the demo asset as the standard graph left it (no atlas configured), and its
    processing.json then, taken before any test localizes the asset again."""
    asset = demo_asset[2]
    doc = asset.read_processing()
    return Path(write_report(asset, str(tmp_path_factory.mktemp("report-page") / "report.html"))), doc


@pytest.mark.slow
def test_full_report_in_chromium_matches_processing_json(demo_asset, no_atlas_page, browser):
    asset = demo_asset[2]
    path, doc = no_atlas_page
    facts = check_loads_cleanly(browser.load(path), path)
    check_nodes(facts, doc)
    assert len(facts["nodes"]) == 10 and {r["state"] for r in facts["nodes"]} == {"committed"}
    assert {i["figure"] for i in facts["images"]} == {
        "timeline", "probe00-rms", "probe00-spectra", "probe00-drift-map", "probe00-yield-figure",
        "probe00-metrics", "probe00-probe", "probe00-ccf"}
    assert dict(facts["missing"]) == {"probe00-regions": "Brain regions not available. left out: no atlas "
                                      "configured (localize.atlas.url: an Allen CCF annotation NRRD)"}
    check_units(facts, asset, doc)
    assert facts["failures"] == []


@pytest.mark.slow
def test_report_with_an_atlas_names_each_unit_region(demo_asset, no_atlas_page, browser, tmp_path, report_cli):
    from tests.tasks.test_atlas import synthetic_ids, write_nrrd

    assert no_atlas_page[0].exists()  # written before the asset is localized again

    session, out, asset, short = demo_asset
    volume = write_nrrd(tmp_path / "annotation_200.nrrd", synthetic_ids())
    config = tmp_path / "atlas.yaml"
    config.write_text(short.read_text() + f"localize:\n  atlas:\n    url: {volume}\n")
    assert cli.main(["run", str(session), "--out", str(out), "--cluster", "inprocess", "--config", str(config),
                     "--only", "localize", "export"]) == 0
    path = tmp_path / "atlas-report.html"
    assert report_cli(["report", asset.url, "--out", str(path)]) == 0
    facts = check_loads_cleanly(browser.load(path), path)
    assert facts["missing"] == []
    metrics = check_units(facts, asset, asset.read_processing())
    units = pd.read_parquet(Path(asset.url) / "probe00" / "localize" / "units.pqt").set_index("unit_id")
    passing = metrics.loc[metrics["passes_qc"], "unit_id"].astype(str)
    shown = {row[0]: row[6] for row in facts["unit_rows"]}  # unit, x, y, ML, AP, DV, region, rate
    assert shown == {u: units.loc[u, "acronym"] for u in passing}
    assert any(a not in ("void", "root") for a in shown.values()), shown
    # units per region, all and passing, as units.pqt and metrics.pqt have them
    located = units.join(metrics.set_index(metrics["unit_id"].astype(str))["passes_qc"])
    by_region = {r: [int(n), int(located.loc[located["acronym"] == r, "passes_qc"].sum())]
                 for r, n in located["acronym"].value_counts().items()}
    assert {r: [n, p] for r, n, p, _ in facts["regions"] if n} == by_region
