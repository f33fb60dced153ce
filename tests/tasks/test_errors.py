"""Bad inputs: each fails its node with an error naming the file and the problem, gives a non-zero
exit through the CLI, and leaves the derived asset consistent (what is committed stays complete,
``processing.json`` lists exactly the committed nodes)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neuropool.cli import main
from neuropool.io import timeseries
from neuropool.io.readers.spikeglx import make_np1_meta, write_meta
from neuropool.io.store import DerivedAsset

from .conftest import (
    assert_asset_consistent,
    commit_files,
    run_standard,
    tree_hash,
    write_np1_recording,
    write_session_json,
)

PROBE_DIR = "raw_ephys_data/probe00"
RAW = "probe00/raw.zarr"
PRE = "probe00/preprocessed.zarr"


def cli(session: Path, out: Path, *extra: str) -> int:
    return main(["run", str(session), "--out", str(out), "--cluster", "inprocess", *extra])


def one(session: Path, pattern: str) -> Path:
    (found,) = session.joinpath(PROBE_DIR).glob(pattern)
    return found


def truncate(path: Path, n_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - n_bytes)


def touch_newer(path: Path, seconds: float = 10.0) -> None:
    """Move ``path``'s modification time forward (a file replaced by a newer copy)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def edit_meta(path: Path, key: str, change: Callable[[str], str]) -> None:
    lines = path.read_text().splitlines()
    out = [f"{key}={change(line.split('=', 1)[1])}" if line.split("=", 1)[0] == key else line for line in lines]
    assert out != lines, f"{key} not in {path}"
    path.write_text("\n".join(out) + "\n")


# -- each bad input: (session kind, damage, file named, [words of the problem], error class) --------


def _truncate_cbin(s: Path) -> Path:
    truncate(one(s, "*.cbin"), 1000)
    return one(s, "*.cbin")


def _ch_ends_early(s: Path) -> Path:
    edit_json(one(s, "*.ch"), lambda h: h["chunk_offsets"].__setitem__(-1, h["chunk_offsets"][-1] - 100))
    return one(s, "*.ch")


def _ch_ends_late(s: Path) -> Path:
    edit_json(one(s, "*.ch"), lambda h: h["chunk_offsets"].__setitem__(-1, h["chunk_offsets"][-1] + 100))
    return one(s, "*.cbin")


def _ch_not_monotonic(s: Path) -> Path:
    def swap(h: dict) -> None:
        off = h["chunk_offsets"]
        off[1], off[2] = off[2], off[1]

    edit_json(one(s, "*.ch"), swap)
    return one(s, "*.ch")


def _ch_interior_offset_shifted(s: Path) -> Path:
    edit_json(one(s, "*.ch"), lambda h: h["chunk_offsets"].__setitem__(1, h["chunk_offsets"][1] + 7))
    return one(s, "*.cbin")


def _ch_missing(s: Path) -> Path:
    ch = one(s, "*.ch")
    ch.unlink()
    return ch


def _meta_size_too_big_bin(s: Path) -> Path:
    edit_meta(one(s, "*.meta"), "fileSizeBytes", lambda v: str(int(v) + 770))
    return one(s, "*.bin")


def _meta_size_too_small_bin(s: Path) -> Path:
    edit_meta(one(s, "*.meta"), "fileSizeBytes", lambda v: str(int(v) - 770))
    return one(s, "*.meta")


def _meta_size_wrong_cbin(s: Path) -> Path:
    edit_meta(one(s, "*.meta"), "fileSizeBytes", lambda v: str(int(v) - 770))
    return one(s, "*.meta")


def _meta_missing_bin(s: Path) -> Path:
    meta = one(s, "*.meta")
    meta.unlink()
    return meta


def _bin_content_changed(s: Path) -> Path:
    path = one(s, "*.bin")
    with open(path, "r+b") as f:
        f.seek(770 * 100)
        f.write(b"\x55\x55")
    return path


def _session_json_points_to_nothing(s: Path) -> Path:
    write_session_json(s, {"probe00": f"{PROBE_DIR}/nothing.ap.cbin"})
    return s / PROBE_DIR / "nothing.ap.cbin"


BAD_INPUTS = {
    "truncated-cbin": ("cbin", _truncate_cbin, ["1000 bytes missing", "incomplete"], "TruncatedFileError"),
    "ch-ends-before-cbin": ("cbin", _ch_ends_early, ["says the chunks end at byte", "another .cbin"], "RawDataError"),
    "ch-ends-after-cbin": ("cbin", _ch_ends_late, ["100 bytes missing"], "TruncatedFileError"),
    "ch-offsets-not-monotonic": ("cbin", _ch_not_monotonic, ["chunk_offsets are not monotonic"], "MetadataError"),
    "ch-interior-offset-wrong": ("cbin", _ch_interior_offset_shifted, ["chunk 1", "does not decompress"], "RawDataError"),
    "ch-missing": ("cbin", _ch_missing, ["no such file", ".ch header"], "MetadataError"),
    "meta-says-bin-is-bigger": ("bin", _meta_size_too_big_bin, ["fileSizeBytes=", "770 bytes missing"], "TruncatedFileError"),
    "meta-says-bin-is-smaller": ("bin", _meta_size_too_small_bin, ["fileSizeBytes=", "another file"], "RawDataError"),
    "meta-disagrees-with-cbin": ("cbin", _meta_size_wrong_cbin, ["fileSizeBytes=", "another recording"], "RawDataError"),
    "meta-missing": ("bin", _meta_missing_bin, ["no such file", ".meta"], "MetadataError"),
    "bin-changed-since-acquisition": ("bin", _bin_content_changed, ["fileSHA1", "changed"], "ChecksumError"),
    "session-json-points-to-nothing": ("cbin", _session_json_points_to_nothing, ["no such file"], "SourceNotFoundError"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_its_node_names_the_file_and_exits_non_zero(case, fresh_session, tmp_path, capsys):
    kind, damage, problem, error_class = BAD_INPUTS[case]
    session = fresh_session(kind)
    named = damage(session)
    out = tmp_path / "out"

    report = run_standard(session, out, until="decompress")
    result = report.results["decompress[probe00]"]
    assert result.state == "failed"
    assert result.error.startswith(f"{error_class}: "), result.error
    assert str(named) in result.error, result.error
    for words in problem:
        assert words in result.error, result.error
    assert report.asset.commits() == {}
    assert_asset_consistent(report.asset)

    capsys.readouterr()
    assert cli(session, out, "--until", "preprocess") == 1
    captured = capsys.readouterr()
    assert re.search(r"decompress\[probe00\]: FAILED: .*" + re.escape(str(named)), captured.out), captured.out
    assert "preprocess[probe00]: skipped, because decompress[probe00] failed" in captured.out
    assert "did not complete" in captured.err
    assert [p.name for p in out.iterdir()] == [Path(report.asset.url).name]  # the same asset, resumed
    assert report.asset.commits() == {}
    assert_asset_consistent(report.asset)


def test_a_source_that_does_not_exist_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_session"
    out = tmp_path / "out"
    assert cli(missing, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuropool: error: ") and str(missing) in err and "no such" in err
    assert not out.exists()  # nothing was created


# -- invalid configurations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("preprocess:\n  highpass_freq: -1\n", "preprocess.highpass_freq", ["greater than 0", "-1"]),
        pytest.param(
            "sort:\n  sorter: nosuchsorter\n", "sort.sorter", ["nosuchsorter"],
        ),
        ("preprocess:\n  highpass_frq: 300\n", "preprocess.highpass_frq", ["Extra inputs are not permitted"]),
        ("decompress:\n  chunk_seconds: 0\n", "decompress.chunk_seconds", ["greater than 0"]),
        ("decompress:\n  compression: gzip\n", "decompress.compression", ["gzip"]),
        ("sortt: {}\n", "sortt", ["Extra inputs are not permitted"]),
    ],
    ids=["negative-highpass", "unknown-sorter", "unknown-key", "zero-chunk", "bad-compression", "unknown-section"],
)
def test_invalid_config_exits_2_naming_the_field(yaml_text, field, words, fresh_session, tmp_path, capsys):
    session = fresh_session("cbin")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "out"
    assert cli(session, out, "--config", str(config), "--until", "preprocess") == 2
    err = capsys.readouterr().err
    assert err.startswith("neuropool: error: ") and str(config) in err, err
    assert re.search(rf"^\s*{re.escape(field)}: ", err, re.MULTILINE), err
    for w in words:
        assert w in err, err
    assert not out.exists()  # rejected before anything was created


def test_highpass_above_nyquist_fails_preprocess_only(fresh_session, tmp_path, capsys):
    session = fresh_session("cbin")
    config = tmp_path / "pipeline.yaml"
    config.write_text("preprocess:\n  highpass_freq: 20000\n")
    out = tmp_path / "out"
    assert cli(session, out, "--config", str(config), "--until", "preprocess") == 1
    assert "preprocess[probe00]: FAILED" in capsys.readouterr().out
    (asset_dir,) = out.iterdir()
    asset = DerivedAsset(str(asset_dir))
    commits = assert_asset_consistent(asset)
    assert sorted(commits) == ["decompress[probe00]"]


# -- what is committed survives ------------------------------------------------------------------


@pytest.fixture
def processed(fresh_session, tmp_path, capsys):
    """A small session processed through the CLI to ``preprocess``, and its asset."""
    session = fresh_session("cbin")
    out = tmp_path / "out"
    assert cli(session, out, "--until", "preprocess") == 0
    capsys.readouterr()
    (asset_dir,) = out.iterdir()
    asset = DerivedAsset(str(asset_dir))
    assert sorted(assert_asset_consistent(asset)) == ["decompress[probe00]", "preprocess[probe00]"]
    return session, out, asset


def test_rerun_unchanged_touches_nothing(processed):
    session, out, asset = processed
    markers, raw, pre = commit_files(asset), tree_hash(Path(asset.url) / RAW), tree_hash(Path(asset.url) / PRE)
    report = run_standard(session, out)
    assert report.asset.url == asset.url
    assert {k: r.state for k, r in report.results.items()} == {
        "decompress[probe00]": "cached", "preprocess[probe00]": "cached"}
    assert commit_files(asset) == markers
    assert (tree_hash(Path(asset.url) / RAW), tree_hash(Path(asset.url) / PRE)) == (raw, pre)


def test_source_damaged_after_commit(processed, small_data, capsys):
    """The source changes (a truncated, newer copy) and re-decompressing it fails.

    The old raw store no longer describes the source: the runner withdraws its commit before
    trying again, so it must not count any more (no marker, not in processing.json). The
    preprocessed store was not rewritten: its commit and its bytes are untouched, and it is
    still complete. Putting a good copy back recovers everything.
    """
    session, out, asset = processed
    markers = commit_files(asset)
    pre_hash = tree_hash(Path(asset.url) / PRE)
    pre_before = timeseries.TimeseriesStore(f"{asset.url}/{PRE}").traces[:]
    cbin = one(session, "*.cbin")
    good = cbin.read_bytes()
    truncate(cbin, 5000)
    touch_newer(cbin)

    assert cli(session, out, "--until", "preprocess") == 1
    text = capsys.readouterr().out
    assert "decompress[probe00]: FAILED: TruncatedFileError" in text and str(cbin) in text
    assert "preprocess[probe00]: skipped, because decompress[probe00] failed" in text

    report = run_standard(session, out)
    assert report.asset.url == asset.url
    dec, pre = report.results["decompress[probe00]"], report.results["preprocess[probe00]"]
    assert dec.state == "failed" and str(cbin) in dec.error and "5000 bytes missing" in dec.error
    assert pre.state == "skipped" and "decompress[probe00]" in pre.error

    commits = assert_asset_consistent(asset)
    assert sorted(commits) == ["preprocess[probe00]"]  # the stale raw commit was withdrawn
    after = commit_files(asset)
    assert after == {k: v for k, v in markers.items() if k.startswith("preprocess")}
    assert tree_hash(Path(asset.url) / PRE) == pre_hash
    listed = [p["node"] for p in asset.read_processing()["processing_pipeline"]["data_processes"]]
    assert listed == ["preprocess[probe00]"]

    # a good copy again: decompress and then preprocess run again, to the same result
    cbin.write_bytes(good)
    touch_newer(cbin, 20)
    assert cli(session, out, "--until", "preprocess") == 0
    capsys.readouterr()
    commits = assert_asset_consistent(asset)
    assert sorted(commits) == ["decompress[probe00]", "preprocess[probe00]"]
    assert commits["preprocess[probe00]"]["fingerprint"] != json.loads(markers["preprocess__probe00.json"])["fingerprint"]
    np.testing.assert_array_equal(timeseries.TimeseriesStore(f"{asset.url}/{RAW}").traces[:], small_data)
    np.testing.assert_array_equal(timeseries.TimeseriesStore(f"{asset.url}/{PRE}").traces[:], pre_before)


def test_a_corrected_meta_is_not_served_stale(processed, small_data):
    """The .meta beside the .cbin gives gains and geometry: replacing it by a corrected (newer)
    one must redo decompress, not keep the committed store with the old gains."""
    session, out, asset = processed
    old_gains = timeseries.TimeseriesStore(f"{asset.url}/{RAW}").coord("gain_uv")
    meta = one(session, "*.meta")
    write_meta(str(meta), make_np1_meta(len(small_data), 30_000.0, file_size_bytes=small_data.nbytes, ap_gain=250))
    touch_newer(meta)
    report = run_standard(session, out)
    assert report.results["decompress[probe00]"].state == "done"
    new_gains = timeseries.TimeseriesStore(f"{asset.url}/{RAW}").coord("gain_uv")
    np.testing.assert_allclose(new_gains[:384], 2 * old_gains[:384])
    assert_asset_consistent(asset)


def test_interrupted_rewrite_leaves_a_consistent_asset(processed):
    """A run stopped (Ctrl-C, killed worker host) right after a node's old commit is withdrawn
    must not leave processing.json claiming that node is still committed."""
    session, out, asset = processed
    cbin = one(session, "*.cbin")
    touch_newer(cbin)  # a newer copy: decompress must run again

    def interrupt(event: str, node: str, info: dict) -> None:
        if event == "start":
            raise KeyboardInterrupt

    from neuropool.cluster import InProcessPool
    from neuropool.graphs import load_config, run_graph, standard_graph
    from neuropool.io.session import open_session

    graph = standard_graph(open_session(str(session)), load_config({})).subset(until="preprocess")
    with pytest.raises(KeyboardInterrupt):
        run_graph(graph, asset, InProcessPool(gpus=0), progress=interrupt)
    commits = assert_asset_consistent(asset)
    assert "decompress[probe00]" not in commits


def test_a_failing_probe_leaves_the_other_probe_done(fresh_session, small_data, capsys):
    session = fresh_session("cbin")
    second = write_np1_recording(session / "raw_ephys_data" / "probe01", small_data)
    truncate(second, 10)
    write_session_json(session, {"probe00": f"{PROBE_DIR}/{one(session, '*.cbin').name}",
                                 "probe01": second.relative_to(session).as_posix()})
    out = session.parent.parent / "out"

    report = run_standard(session, out)
    states = {k: r.state for k, r in report.results.items()}
    assert states == {"decompress[probe00]": "done", "preprocess[probe00]": "done",
                      "decompress[probe01]": "failed", "preprocess[probe01]": "skipped"}
    assert str(second) in report.results["decompress[probe01]"].error
    assert "decompress[probe01]" in report.results["preprocess[probe01]"].error
    commits = assert_asset_consistent(report.asset)
    assert sorted(commits) == ["decompress[probe00]", "preprocess[probe00]"]
    np.testing.assert_array_equal(timeseries.TimeseriesStore(f"{report.asset.url}/{RAW}").traces[:], small_data)

    # through the CLI: the good probe is kept (cached), the bad one fails again, exit 1
    assert cli(session, out, "--until", "preprocess") == 1
    text = capsys.readouterr().out
    assert "decompress[probe00]: already committed" in text and "preprocess[probe00]: already committed" in text
    assert "decompress[probe01]: FAILED" in text
    assert sorted(assert_asset_consistent(report.asset)) == ["decompress[probe00]", "preprocess[probe00]"]
    assert not (Path(report.asset.url) / "_commits" / "decompress__probe01.json").exists()


def test_single_file_source_with_the_default_out(fresh_session, capsys):
    """``neuropool run FOLDER/rec.ap.cbin`` writes its asset next to FOLDER, never inside it."""
    session = fresh_session("cbin")
    cbin = one(session, "*.cbin")
    before = sorted(p.name for p in cbin.parent.iterdir())
    assert main(["run", str(cbin), "--until", "decompress", "--cluster", "inprocess"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in cbin.parent.iterdir()) == before  # the raw folder is untouched
    (asset_dir,) = (p for p in cbin.parent.parent.iterdir() if p != cbin.parent)  # beside the raw folder
    assert sorted(assert_asset_consistent(DerivedAsset(str(asset_dir)))) == ["decompress[probe00]"]
