"""The command line: help is complete; errors are one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from neuropool.cli import build_parser, main


def test_help_lists_every_subcommand_and_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "run" in out
    for sub, options in {"demo": ["--out", "--duration", "--seed", "--units", "--config", "--cluster", "--workers"],
                         "run": ["--out", "--config", "--cluster", "--until", "--only", "--new", "--workers"]}.items():
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        text = capsys.readouterr().out
        for opt in options:
            assert opt in text, f"neuropool {sub} --help does not mention {opt}"
    parser = build_parser()
    assert parser.prog == "neuropool"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "neuropool.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("neuropool ")


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    code = main(["run", str(tmp_path / "no-such-session"), "--cluster", "inprocess"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no-such-session" in err and err.startswith("neuropool: error:")
    assert "Traceback" not in err


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sort:\n  n_jobs: 0\n")
    (tmp_path / "s").mkdir()
    code = main(["run", str(tmp_path / "s"), "--config", str(cfg), "--cluster", "inprocess"])
    err = capsys.readouterr().err
    assert code == 2 and "sort.n_jobs" in err
    assert str(cfg) in err


def test_unknown_until_task_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "x", "--until", "dance"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
