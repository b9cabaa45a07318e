"""benchmarks/common.py, the opening and closing every rig benchmark shares: what a benchmark prints when it cannot
run, how SIGTERM unwinds it, what `--details` and `--keep-logs` leave behind, and the nearest-rank percentile its
tables report. The benchmarks run as scripts (benchmarks/ is not a package), so the module is loaded from its file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load()


@dataclass
class Sample:
    node: str
    seconds: float


@dataclass
class Change:
    changed: list[str]


def test_the_module_imports_nothing_but_the_standard_library() -> None:
    """A benchmark imports it before it knows the test bed is installed, to say so in its own name."""
    source = (BENCHMARKS / "common.py").read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert top_level
    for line in top_level:
        name = line.split()[1].split(".")[0]
        assert name == "__future__" or name in sys.stdlib_module_names, line


def test_cannot_run_names_the_script_what_is_missing_and_the_installer(capsys: pytest.CaptureFixture[str]) -> None:
    assert common.cannot_run("bgp.py", ["bird2", "kube-apiserver"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("bgp.py: cannot run: bird2; kube-apiserver; `bash benchmarks/prerequisites.sh` installs every "
                   "benchmark prerequisite\n")


def test_sigterm_unwinds_the_main_process_through_its_clean_up() -> None:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    cleaned: list[str] = []
    try:
        common.exit_on_signals()
        with pytest.raises(SystemExit) as exit_info:
            try:
                signal.raise_signal(signal.SIGTERM)  # its handler runs before this returns
            finally:
                cleaned.append("clean-up")
        assert exit_info.value.code == 128 + signal.SIGTERM
        assert cleaned == ["clean-up"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_forked_helper_ends_at_once_without_running_the_clean_up(tmp_path: Path) -> None:
    """pyroute2's NetNS forks a helper and SIGTERMs it: the helper inherits the handler and must not unwind a copy
    of the benchmark's clean-up (which would tear down the rig the parent still uses)."""
    marker = tmp_path / "cleaned"
    pid = os.fork()
    if pid == 0:  # the helper
        try:
            try:
                common._exit_on_signal(signal.SIGTERM, None)
            finally:
                marker.write_text("ran")  # reached only if the handler unwound instead of ending the process
        finally:
            os._exit(0)  # never back into pytest
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
    assert not marker.exists()


def test_details_are_one_json_line_per_record_with_the_kind_when_asked(tmp_path: Path) -> None:
    plain, kinds = tmp_path / "plain.jsonl", tmp_path / "kinds.jsonl"
    common.write_details(plain, [Sample("n1", 0.25), Sample("n2", 1.5)])
    common.write_details(kinds, [Sample("n1", 0.25), Change(["n1-alpha"])], kind=True)
    assert [json.loads(line) for line in plain.read_text().splitlines()] == [
        {"node": "n1", "seconds": 0.25}, {"node": "n2", "seconds": 1.5}]
    assert [json.loads(line) for line in kinds.read_text().splitlines()] == [
        {"kind": "Sample", "node": "n1", "seconds": 0.25}, {"kind": "Change", "changed": ["n1-alpha"]}]


def test_without_details_nothing_is_written(tmp_path: Path) -> None:
    common.write_details(None, [Sample("n1", 0.25)])
    assert list(tmp_path.iterdir()) == []


def test_file_options_parse_as_before(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    common.add_file_options(parser, "managers' logs")
    assert parser.parse_args([]) == argparse.Namespace(keep_logs=False, details=None)
    args = parser.parse_args(["--keep-logs", "--details", str(tmp_path / "d.jsonl")])
    assert args.keep_logs is True and args.details == tmp_path / "d.jsonl"
    assert "keep the managers' logs" in parser.format_help()


@pytest.mark.parametrize("keep", [False, True])
def test_the_scratch_directory_goes_unless_kept(keep: bool, capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.ExitStack() as stack:
        path = common.scratch_dir(stack, "kvm-common-test-", keep)
        (path / "manager.log").write_text("{}\n")
    try:
        assert path.exists() is keep
        assert (f"logs kept in {path}" in capsys.readouterr().err) is keep
    finally:
        common.keep_or_remove(False, path)
    assert not path.exists()


def test_the_scratch_directory_outlives_what_was_entered_after_it() -> None:
    """The API server writes into it until it stops: the directory is removed after the server's exit."""
    seen: list[bool] = []
    with contextlib.ExitStack() as stack:
        path = common.scratch_dir(stack, "kvm-common-test-", False)
        stack.callback(lambda: seen.append(path.exists()))
    assert seen == [True]
    assert not path.exists()


def test_pct_is_the_nearest_rank_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert common.pct(values, 0.5) == 51.0  # round(0.5 * 99) = 50 (banker's rounding), the 51st value
    assert common.pct(values, 0.99) == 99.0
    assert common.pct(values, 1.0) == 100.0
    assert common.pct([3.0, 1.0, 2.0], 0.0) == 1.0
    assert common.pct([0.4], 0.99) == 0.4


def test_wait_for_returns_the_first_real_value_and_times_out_naming_what() -> None:
    answers = iter([None, False, 0, "n2"])
    assert common.wait_for("a holder", lambda: next(answers), 5, poll=0.001) == 0  # 0 is a value, not "not yet"
    with pytest.raises(common.Timeout, match=r"^a holder: not within 0\.01 s$"):
        common.wait_for("a holder", lambda: None, 0.01, poll=0.001)
    assert common.wait_for_optional(lambda: None, 0.01) is None
