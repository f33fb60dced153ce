"""Errors through the command line: one paragraph, ``neuropool: error: ...`` with a hint, exit
code 2 for usage and configuration errors, 1 for failed tasks and bugs; the traceback only with
``--debug``, before or after the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neuropool import cli, errors
from neuropool.cli import ERRORS, describe_error, main

ROOT = Path(__file__).resolve().parents[1]

#: Every error class neuropool defines.
NEUROPOOL_ERRORS = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.NeuropoolError)),
    key=lambda c: c.__name__,
)
TASK_FAILURES = (errors.TaskFailedError, errors.SortingError)


def raising(exc: BaseException):
    def command(args):
        raise exc

    return command


def run_raising(monkeypatch, capsys, exc: BaseException, argv: list[str]) -> tuple[int, str]:
    """``neuropool status x`` whose command raises ``exc``; its exit code and stderr."""
    monkeypatch.setattr(cli, "cmd_status", raising(exc))
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_paragraph(err: str) -> None:
    assert err.startswith("neuropool: error: "), err
    assert "Traceback" not in err, err
    assert "\n\n" not in err.strip(), err


def make(cls: type[BaseException], text: str) -> BaseException:
    return cls("sort[probe00]", text) if cls is errors.TaskFailedError else cls(text)


def test_every_neuropool_error_class_has_its_own_hint():
    assert {c for c, _, _ in ERRORS} >= set(NEUROPOOL_ERRORS)
    # the classes are tried in order: a subclass must come before its base
    order = [c for c, _, _ in ERRORS]
    for i, cls in enumerate(order):
        assert not any(issubclass(later, cls) and later is not cls for later in order[i + 1:]), cls


@pytest.mark.parametrize("cls", NEUROPOOL_ERRORS, ids=lambda c: c.__name__)
def test_each_neuropool_error_is_one_paragraph_with_a_hint_and_its_exit_code(cls, monkeypatch, capsys):
    code, err = run_raising(monkeypatch, capsys, make(cls, "/data/x.ap.cbin: something is wrong"), ["status", "x"])
    assert code == (1 if cls in TASK_FAILURES else 2)
    assert_one_paragraph(err)
    assert "/data/x.ap.cbin: something is wrong" in err
    hint = next(h for c, _, h in ERRORS if c is cls)
    assert err.rstrip().endswith(hint)
    assert "bug" not in err


def test_a_task_failure_says_how_to_resume(monkeypatch, capsys):
    code, err = run_raising(monkeypatch, capsys, errors.TaskFailedError("sort[probe00]", ValueError("no units")), ["status", "x"])
    assert code == 1
    assert err.startswith("neuropool: error: sort[probe00] failed: ValueError: no units. ")
    assert "run the same command again" in err and "neuropool status" in err


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (FileNotFoundError(2, "No such file or directory", "/data/missing.yaml"), ["/data/missing.yaml", "Check the path"]),
        (PermissionError(13, "Permission denied", "/data/out"), ["/data/out", "you may read"]),
        (IsADirectoryError(21, "Is a directory", "/data/session"), ["/data/session", "not a folder"]),
        (ModuleNotFoundError("No module named 'kilosort'"), ["kilosort", "reinstall neuropool"]),
        (ConnectionRefusedError(111, "Connection refused"), ["Connection refused", "--cluster"]),
    ],
    ids=["missing-file", "permission", "directory", "missing-package", "network"],
)
def test_common_environment_errors_exit_2_with_a_hint(exc, words, monkeypatch, capsys):
    code, err = run_raising(monkeypatch, capsys, exc, ["status", "x"])
    assert code == 2
    assert_one_paragraph(err)
    for w in words:
        assert w in err, err


def test_an_s3_url_in_the_message_adds_the_credentials_hint(monkeypatch, capsys):
    code, err = run_raising(monkeypatch, capsys, errors.SourceNotFoundError("s3://lab/raw/x: file not found"),
                            ["status", "x"])
    assert code == 2 and "AWS_*" in err
    _, local = describe_error(errors.SourceNotFoundError("/lab/raw/x: file not found"))
    assert "AWS_*" not in local


def test_a_multiline_message_stays_one_paragraph(monkeypatch, capsys):
    exc = errors.ConfigError("c.yaml: invalid pipeline configuration:\n  sort.n_jobs: bad\n\n  qc.x: bad\n")
    code, err = run_raising(monkeypatch, capsys, exc, ["status", "x"])
    assert code == 2
    assert_one_paragraph(err)
    assert err.splitlines()[1:3] == ["  sort.n_jobs: bad", "  qc.x: bad"]  # each field on its line


def test_a_bug_is_named_as_such_with_its_type_and_message(monkeypatch, capsys):
    code, err = run_raising(monkeypatch, capsys, KeyError("probe07"), ["status", "x"])
    assert code == 1
    assert_one_paragraph(err)
    assert err.startswith("neuropool: error: unexpected KeyError: 'probe07'. This is a bug in neuropool")
    assert "--debug" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_prints_the_traceback(where, monkeypatch, capsys):
    argv = ["--debug", "status", "x"] if where == "before" else ["status", "x", "--debug"]
    code, err = run_raising(monkeypatch, capsys, errors.StoreError("/x: cannot write"), argv)
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert "neuropool.errors.StoreError: /x: cannot write" in err
    assert err.strip().splitlines()[-1].startswith("neuropool: error: /x: cannot write. ")  # last


def test_debug_is_accepted_after_every_command(capsys):
    for command in ("demo", "run", "status", "scheduler", "worker", "certs", "deploy"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--debug" in capsys.readouterr().out, command


def test_real_user_errors_through_real_commands(tmp_path, capsys):
    # a session that does not exist
    assert main(["run", str(tmp_path / "no-such-session"), "--cluster", "inprocess"]) == 2
    err = capsys.readouterr().err
    assert_one_paragraph(err)
    assert "no-such-session" in err and "Check the path" in err
    # a URL of a protocol nobody knows
    assert main(["status", "s4://bucket/asset"]) == 2
    err = capsys.readouterr().err
    assert_one_paragraph(err)
    assert "s4://bucket/asset" in err and "Protocol not known" in err
    # an invalid config value, and a config file that is not there
    (tmp_path / "s").mkdir()
    (tmp_path / "c.yaml").write_text("preprocess:\n  highpass_freq: -1\n")
    for config, words in ((tmp_path / "c.yaml", "preprocess.highpass_freq"), (tmp_path / "none.yaml", "not found")):
        assert main(["run", str(tmp_path / "s"), "--config", str(config), "--cluster", "inprocess"]) == 2
        err = capsys.readouterr().err
        assert_one_paragraph(err)
        assert str(config) in err and words in err and "default.yaml" in err


def test_no_traceback_leaks_from_the_console_command(tmp_path):
    argv = [sys.executable, "-m", "neuropool.cli", "status", str(tmp_path / "nothing-here")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("neuropool: error: ") and "nothing-here" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
