"""``normgate baseline`` and ``normgate gate`` on hand-made results (tests/data, see make_data.py)."""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from normgate.reports import baselines as baselines_mod
from normgate.reports import gate as gate_mod
from normgate.reports import junit as junit_mod
from normgate.reports import summary as summary_mod
from normgate.reports.commands import add_commands

DATA = Path(__file__).parent / "data"


def cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="normgate")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def read_lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    return path


def resummarize(lines: list[dict]) -> list[dict]:
    """Recount the task and summary lines after editing result lines (a consistent file, as a
    run would have written it)."""
    lines = [ln for ln in lines if ln["type"] not in ("summary", "task")]
    results = [ln for ln in lines if ln["type"] == "result"]
    tasks: dict[str, list[dict]] = {}
    for r in results:
        tasks.setdefault(r["task"], []).append(r)
    task_lines = [
        {"type": "task", "task": t, "kernel": rs[0]["kernel"], "check": rs[0]["check"], "dtype": rs[0]["dtype"],
         "cases": len(rs), "status": "done"}
        for t, rs in tasks.items()
    ]
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("pass", "fail", "error", "skip", "range")}
    return [*lines, *task_lines, {"type": "summary", "cases": len(results), **counts, "interrupted": False}]


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    out = tmp_path / "baseline.json"
    assert cli("baseline", DATA / "pass.jsonl", "--bench", DATA / "bench.json", "-o", out) == 0
    return out


class Gate:
    """Run the gate with a summary and JUnit file; keep what it wrote and printed."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp_path, capsys

    def __call__(self, results: str | Path, baseline: Path, *extra: str | Path) -> int:
        results = DATA / results if isinstance(results, str) else results
        self.summary_path, self.junit_path = self.tmp / "summary.md", self.tmp / "junit.xml"
        for p in (self.summary_path, self.junit_path):
            p.unlink(missing_ok=True)
        self.capsys.readouterr()
        code = cli(
            "gate",
            results,
            "--baseline",
            baseline,
            "--summary",
            self.summary_path,
            "--junit",
            self.junit_path,
            *extra,
        )
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        assert "Traceback" not in self.err
        return code

    @property
    def summary(self) -> str:
        return self.summary_path.read_text()

    @property
    def junit(self) -> ET.Element:
        return ET.parse(self.junit_path).getroot()

    def failed_cases(self) -> dict[str, str]:
        return {
            f"{tc.get('classname')} {tc.get('name')}": tc.find("failure").get("message")
            for tc in self.junit.iter("testcase")
            if tc.find("failure") is not None
        }


@pytest.fixture
def gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Gate:
    return Gate(tmp_path, capsys)


# ----------------------------------------------------------------------------- baseline


def test_baseline_is_small_sorted_and_stable(tmp_path: Path, baseline: Path):
    text = baseline.read_text()
    data = json.loads(text)
    assert data["format"] == baselines_mod.FORMAT
    assert data["budget"] == {"max_ulp_growth": 0.25, "min_cases_fraction": 0.5}
    assert len(data["checks"]) == 30 and len(data["bench"]) == 66
    assert list(data) == sorted(data)
    lines = text.splitlines()
    assert sum('"check": ' in ln for ln in lines) == 30  # one check per line
    entry = next(
        c
        for c in data["checks"]
        if c["kernel"] == "torch_rmsnorm" and c["dtype"] == "bf16" and c["check"] == "accuracy"
    )
    assert entry["verdicts"] == {"pass": 5, "range": 1} and entry["max_ulp"]["y"] == 0.5
    assert "date" not in text and "elapsed" not in text and "duration" not in text
    # the same results with another date and timings give the same bytes
    lines2 = read_lines("pass.jsonl")
    lines2[0]["date"] = "2030-01-01T00:00:00+00:00"
    for ln in lines2:
        if "duration_s" in ln:
            ln["duration_s"] = 9.9
    again = tmp_path / "again.json"
    assert (
        cli(
            "baseline", write_lines(tmp_path / "r.jsonl", lines2), "--bench", DATA / "bench.json", "-o", again
        )
        == 0
    )
    assert again.read_text() == text
    assert baselines_mod.load_baseline(str(baseline)).entries  # it reads back


def test_baseline_refuses_failures_unless_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "b.json"
    assert cli("baseline", DATA / "fail.jsonl", "-o", out) == 1
    assert "--accept-failures" in capsys.readouterr().err and not out.exists()
    assert cli("baseline", DATA / "fail.jsonl", "-o", out, "--accept-failures") == 0
    data = json.loads(out.read_text())
    known = [c for c in data["checks"] if "fail" in c["verdicts"] or "error" in c["verdicts"]]
    assert len(known) == 2


@pytest.mark.parametrize("name", ["truncated.jsonl", "interrupted.jsonl", "malformed.jsonl"])
def test_baseline_needs_a_complete_readable_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], name):
    assert cli("baseline", DATA / name, "-o", tmp_path / "b.json") == 2
    err = capsys.readouterr().err
    assert name in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- gate verdicts


def test_clean_run_passes(gate: Gate, baseline: Path):
    assert gate("pass.jsonl", baseline, "--bench", DATA / "bench.json") == 0
    assert gate.out.startswith("normgate gate: PASS")
    assert gate.summary.startswith("## ✅ normgate gate: PASS")
    root = gate.junit
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    assert int(suite.get("tests")) == 1 + 30 + 66 and suite.get("failures") == "0"


def test_new_failures_regress_with_replay_commands(gate: Gate, baseline: Path):
    assert gate("fail.jsonl", baseline, "--report-url", "https://ci.example/run/7/report.html") == 1
    summary = gate.summary
    assert summary.startswith("## ❌ normgate gate: FAIL (2 regressions)")
    assert "[Full HTML report](https://ci.example/run/7/report.html)" in summary
    assert "normgate replay 'triton_rmsnorm@accuracy:rmsnorm,2x5,bf16,x=tiny" in summary
    assert "normgate replay 'triton_rmsnorm@poisoned:rmsnorm,1x4,fp32,x=zeros" in summary
    assert "\x1b" not in summary
    failed = gate.failed_cases()
    assert len(failed) == 2
    acc = next(m for k, m in failed.items() if k.startswith("normgate.triton_rmsnorm bf16 accuracy"))
    assert acc.startswith("new failure") and "1.5 ULP" in acc
    assert "replay: normgate replay" in "".join(gate.junit.itertext())
    assert "new failure: triton_rmsnorm bf16 accuracy" in gate.out


def test_missing_kernel_fails_closed(gate: Gate, baseline: Path):
    assert gate("missing_kernel.jsonl", baseline) == 1
    assert "missing kernel" in gate.summary and "triton\\_layernorm" in gate.summary
    assert len(gate.failed_cases()) == 10  # one JUnit failure per missing check


def test_missing_dtype_or_check_fails_closed(gate: Gate, baseline: Path, tmp_path: Path):
    lines = [
        ln
        for ln in read_lines("pass.jsonl")
        if not (
            ln.get("kernel") == "torch_rmsnorm" and ln.get("check") == "repeat" and ln.get("dtype") == "fp32"
        )
    ]
    assert gate(write_lines(tmp_path / "r.jsonl", resummarize(lines)), baseline) == 1
    assert list(gate.failed_cases()) == [
        "normgate.torch_rmsnorm fp32 repeat [rmsnorm casting=llama,offset=0,residual=0,out=promote]"
    ]
    assert "missing" in gate.summary


@pytest.mark.parametrize(
    ("name", "problem"), [("truncated.jsonl", "no summary line"), ("interrupted.jsonl", "interrupted")]
)
def test_incomplete_runs_fail(gate: Gate, baseline: Path, name: str, problem: str):
    assert gate(name, baseline) == 1
    assert problem in gate.summary
    run_case = next(tc for tc in gate.junit.iter("testcase") if tc.get("name") == "run integrity")
    assert problem in run_case.find("failure").get("message")


def test_run_without_env_fails(gate: Gate, baseline: Path, tmp_path: Path):
    assert gate(write_lines(tmp_path / "r.jsonl", read_lines("pass.jsonl")[1:]), baseline) == 1
    assert "no env line" in gate.summary


def test_accuracy_budget(gate: Gate, baseline: Path, tmp_path: Path):
    assert gate("worse.jsonl", baseline) == 1
    assert "dx: max error 19 ULP, baseline 6" in gate.summary
    loose = tmp_path / "loose.json"
    assert cli("baseline", DATA / "pass.jsonl", "--max-ulp-growth", "3", "-o", loose) == 0
    assert gate("worse.jsonl", loose) == 0


def test_half_ulp_is_always_allowed(gate: Gate, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    zeros = [lines[0]] + [ln for ln in lines if ln.get("regime") == "zeros" and ln.get("check") == "accuracy"]
    base = tmp_path / "b.json"
    assert cli("baseline", write_lines(tmp_path / "z.jsonl", resummarize(zeros)), "-o", base) == 0
    for ln in zeros[1:]:  # exact before, correctly rounded now: not a regression
        for e in ln["errors"].values():
            e["max_ulp"] = 0.5
    assert gate(write_lines(tmp_path / "z2.jsonl", resummarize(zeros)), base) == 0


def test_unknown_accuracy_is_not_a_pass(gate: Gate, baseline: Path, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    acc = next(ln for ln in lines if ln["type"] == "result" and ln["check"] == "accuracy")
    del acc["errors"]["y"]["max_ulp"]
    assert gate(write_lines(tmp_path / "r.jsonl", lines), baseline) == 1
    assert "y: max error nan ULP" in gate.summary
    del acc["errors"]["dx"]
    assert gate(write_lines(tmp_path / "r.jsonl", lines), baseline) == 1
    assert "output dx has no accuracy data" not in gate.summary  # other cases still measured dx
    for ln in lines:
        if ln["type"] == "result" and ln["check"] == "accuracy" and ln["kernel"] == "triton_rmsnorm":
            ln["errors"].pop("dweight", None)
    assert gate(write_lines(tmp_path / "r.jsonl", lines), baseline) == 1
    assert "output dweight has no accuracy data" in gate.summary


def test_all_skipped_and_coverage_drop(gate: Gate, baseline: Path, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    for ln in lines:
        if (
            ln.get("kernel") == "triton_layernorm"
            and ln.get("check") == "repeat"
            and ln.get("dtype") == "bf16"
        ):
            ln["verdict"], ln["reason"] = "skip", "no GPU"
    keep = [
        ln
        for ln in lines
        if not (
            ln.get("kernel") == "torch_rmsnorm"
            and ln.get("check") == "contract"
            and ln.get("dtype") == "fp32"
            and ln.get("regime") != "normal"
        )
    ]
    assert gate(write_lines(tmp_path / "r.jsonl", resummarize(keep)), baseline) == 1
    assert "no longer runs" in gate.summary and "coverage dropped" in gate.summary


def test_new_kernels(gate: Gate, baseline: Path, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    lines[0]["declarations"]["new_rmsnorm"] = lines[0]["declarations"]["triton_rmsnorm"]
    extra = [
        dict(ln, kernel="new_rmsnorm", task=ln["task"].replace("triton_", "new_"))
        for ln in lines
        if ln.get("kernel") == "triton_rmsnorm" and ln["type"] == "result"
    ]
    assert gate(write_lines(tmp_path / "ok.jsonl", resummarize(lines + extra)), baseline) == 0
    assert "new check" in gate.summary  # a note, with a hint to extend the baseline
    extra[3]["verdict"] = "fail"
    assert gate(write_lines(tmp_path / "bad.jsonl", resummarize(lines + extra)), baseline) == 1
    assert "check not in the baseline" in gate.summary


def test_known_failures(gate: Gate, tmp_path: Path):
    known = tmp_path / "known.json"
    assert cli("baseline", DATA / "fail.jsonl", "--accept-failures", "-o", known) == 0
    assert gate("fail.jsonl", known) == 0
    assert "known failure" in gate.summary
    skipped = [tc for tc in gate.junit.iter("testcase") if tc.find("skipped") is not None]
    assert len(skipped) == 2
    assert gate("pass.jsonl", known) == 0
    assert "fixed" in gate.summary


def test_interpreter_mismatch_is_a_usage_error(gate: Gate, baseline: Path, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    lines[0]["interpreter"] = True
    assert gate(write_lines(tmp_path / "ci.jsonl", lines), baseline) == 2
    assert "interpreter" in gate.err


# ----------------------------------------------------------------------------- benchmarks


def test_slowdown(gate: Gate, baseline: Path):
    assert gate("pass.jsonl", baseline, "--bench", DATA / "bench_slow.json") == 1
    assert gate.summary.count("| slowdown |") == 2 and "+20.0%" in gate.summary
    assert gate("pass.jsonl", baseline, "--bench", DATA / "bench_slow.json", "--max-slowdown", "0.25") == 0


def test_missing_benchmark_fails(gate: Gate, baseline: Path, tmp_path: Path):
    data = json.loads((DATA / "bench.json").read_text())
    data["benchmarks"] = data["benchmarks"][1:]
    (tmp_path / "b.json").write_text(json.dumps(data))
    assert gate("pass.jsonl", baseline, "--bench", tmp_path / "b.json") == 1
    assert "missing benchmark" in gate.summary


def test_bench_without_baseline_times_is_a_usage_error(gate: Gate, tmp_path: Path):
    plain = tmp_path / "plain.json"
    assert cli("baseline", DATA / "pass.jsonl", "-o", plain) == 0
    assert gate("pass.jsonl", plain, "--bench", DATA / "bench.json") == 2
    assert "no benchmark times" in gate.err


def test_bench_on_another_gpu_is_a_usage_error(gate: Gate, baseline: Path, tmp_path: Path):
    data = json.loads((DATA / "bench.json").read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["gpu"] = "NVIDIA H200"
    (tmp_path / "h200.json").write_text(json.dumps(data))
    assert gate("pass.jsonl", baseline, "--bench", tmp_path / "h200.json") == 2
    assert "H200" in gate.err


# ----------------------------------------------------------------------------- the baseline itself changed


def test_baseline_changes_are_listed_first(gate: Gate, baseline: Path, tmp_path: Path):
    lines = [ln for ln in read_lines("pass.jsonl") if ln.get("kernel") != "triton_layernorm"]
    pr_baseline = tmp_path / "pr.json"
    assert (
        cli(
            "baseline",
            write_lines(tmp_path / "r.jsonl", resummarize(lines)),
            "--max-ulp-growth",
            "1",
            "-o",
            pr_baseline,
        )
        == 0
    )
    assert gate("missing_kernel.jsonl", pr_baseline, "--base-baseline", baseline) == 0
    summary = gate.summary
    assert summary.startswith("### ⚠️ The baseline changed")
    assert summary.index("The baseline changed") < summary.index("normgate gate: PASS")
    assert "**loosened**: budget max\\_ulp\\_growth: 0.25 → 1" in summary
    assert "**loosened**: dropped kernel triton\\_layernorm (10 checks)" in summary
    assert "**loosened**: dropped all 66 benchmark times" in summary
    assert "baseline loosened" in gate.out


def test_baseline_changes_in_detail(tmp_path: Path):
    base = baselines_mod.load_baseline(str(_baseline_of(tmp_path, "pass.jsonl", "base.json")))
    new = baselines_mod.load_baseline(str(_baseline_of(tmp_path, "fail.jsonl", "new.json", "--accept-failures")))
    key = next(
        k for k in new.entries if k.kernel == "torch_rmsnorm" and k.check == "accuracy" and k.dtype == "fp32"
    )
    new.entries[key].max_ulp["dx"] = 60.0
    fp32 = [k for k in new.entries if k.kernel == "triton_layernorm" and k.dtype == "fp32"]
    for k in fp32:
        del new.entries[k]
    del new.entries[next(k for k in new.entries if k.kernel == "torch_rmsnorm" and k.check == "repeat")]
    new.budget["min_cases_fraction"] = 0.1
    messages = [(c.loosened, c.message) for c in baselines_mod.compare_baselines(base, new)]
    assert (True, "budget min_cases_fraction: 0.5 → 0.1") in messages
    assert (True, "dropped triton_layernorm fp32 (5 checks)") in messages
    assert any(loose and m.startswith("dropped check torch_rmsnorm bf16 repeat") for loose, m in messages)
    assert any(loose and "now accepts failures" in m for loose, m in messages)
    assert any(loose and m.endswith("dx max ULP 6 → 60") for loose, m in messages)
    assert baselines_mod.compare_baselines(base, base) == []


def _baseline_of(tmp_path: Path, results: str, name: str, *extra: str) -> Path:
    out = tmp_path / name
    assert cli("baseline", DATA / results, "-o", out, *extra) == 0
    return out


# ----------------------------------------------------------------------------- escaping


def test_hostile_strings_are_escaped_in_markdown_and_xml(gate: Gate, baseline: Path):
    assert gate("xss.jsonl", baseline) == 1
    summary = gate.summary
    outside_code = re.sub(r"^(`{3,})sh\n.*?\n\1$", "", summary, flags=re.S | re.M)
    # every "<" from the data is backslash-escaped; the only raw tags are our own <details>/<summary>
    assert not re.search(r"(?<!\\)<(?!/?(?:details|summary)>)", outside_code)
    assert "\\<script\\>alert(1)\\</script\\>" in summary and "\\<img src=x" in summary
    assert "@everyone" not in summary and "&#64;everyone" in summary
    assert "a\\|b" in summary or "a|b" not in summary
    # the replay command holds a ``` run: the fence around it must be longer
    blocks = re.findall(r"^(`{3,})sh\n(.*?)\n\1$", summary, re.S | re.M)
    assert blocks and blocks[0][0] == "````" and "``` </code><script>alert(4)" in blocks[0][1]
    root = gate.junit  # parses: control characters from the exception text were removed
    text = ET.tostring(root, encoding="unicode")
    assert "\x00" not in text and "\x07" not in text
    assert any("<script>alert(1)</script>" in (tc.get("classname") or "") for tc in root.iter("testcase"))


def test_markdown_helpers():
    assert summary_mod.md("a|b <x> [l](u) *e* @me") == "a\\|b \\<x\\> \\[l\\](u) \\*e\\* &#64;me"
    block = summary_mod.md_code_block(["echo ```x```"])
    assert block.startswith("````sh\n") and block.endswith("\n````")
    assert junit_mod.xml_text("a\x1b[0m\x00b") == "a\ufffd[0m\ufffdb"


# ----------------------------------------------------------------------------- usage and input errors


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("malformed", "malformed.jsonl:4: not valid JSON"),
        ("no-baseline", "no such file"),
        ("bad-baseline", "not a normgate baseline"),
        ("broken-baseline", "malformed baseline"),
        ("bad-base-baseline", "not valid JSON"),
        ("bad-url", "is not an http(s) URL"),
        ("unwritable", "does not exist"),
        ("bad-bench", 'no "benchmarks" list'),
    ],
)
def test_input_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], baseline: Path, setup, message
):
    results, extra = DATA / "pass.jsonl", []
    if setup == "malformed":
        results = DATA / "malformed.jsonl"
    elif setup == "no-baseline":
        baseline = tmp_path / "none.json"
    elif setup == "bad-baseline":
        baseline = tmp_path / "x.json"
        baseline.write_text('{"checks": []}')
    elif setup == "broken-baseline":
        data = json.loads(baseline.read_text())
        del data["checks"][0]["cases"]
        baseline.write_text(json.dumps(data))
    elif setup == "bad-base-baseline":
        (tmp_path / "base.json").write_text("{")
        extra = ["--base-baseline", tmp_path / "base.json"]
    elif setup == "bad-url":
        extra = ["--report-url", "javascript:alert(1)"]
    elif setup == "unwritable":
        extra = ["--summary", tmp_path / "missing" / "s.md"]
    elif setup == "bad-bench":
        (tmp_path / "b.json").write_text("[]")
        extra = ["--bench", tmp_path / "b.json"]
    assert cli("gate", results, "--baseline", baseline, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_flag_values_are_usage_errors(baseline: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        cli("gate", DATA / "pass.jsonl", "--baseline", baseline, "--max-slowdown", "-1")
    assert e.value.code == 2
    assert "must be a number >= 0" in capsys.readouterr().err


def test_internal_errors_never_pass(
    monkeypatch: pytest.MonkeyPatch, baseline: Path, capsys: pytest.CaptureFixture[str]
):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(gate_mod, "evaluate", boom)
    assert cli("gate", DATA / "pass.jsonl", "--baseline", baseline) == 2
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: bug" in err and "Traceback" not in err


def test_outputs_are_not_written_on_input_errors(tmp_path: Path, baseline: Path):
    summary = tmp_path / "s.md"
    assert cli("gate", DATA / "malformed.jsonl", "--baseline", baseline, "--summary", summary) == 2
    assert not summary.exists()


# ----------------------------------------------------------------------------- crafted inputs
# Each one a pull request's data trying to talk the gate out of its verdict.

ACC = ("torch_rmsnorm", "fp32", "accuracy")


def _acc_lines(lines: list[dict]) -> list[dict]:
    return [
        ln for ln in lines if ln["type"] == "result" and (ln["kernel"], ln["dtype"], ln["check"]) == ACC
    ]


def _set_fail(ln: dict, ulp: float) -> None:
    ln["verdict"], ln["reason"] = "fail", f"y: {ulp:g} ULP > bound"
    for e in ln["errors"].values():
        e["max_ulp"], e["ratio"] = ulp, ulp / e["bound_ulp"]


def _known_baseline(tmp_path: Path) -> Path:
    """A baseline that knows one accuracy case of torch_rmsnorm fp32 failing at 5 ULP."""
    lines = read_lines("pass.jsonl")
    _set_fail(_acc_lines(lines)[1], 5.0)
    out = tmp_path / "known.json"
    assert cli("baseline", write_lines(tmp_path / "k.jsonl", resummarize(lines)), "-o", out, "--accept-failures") == 0
    return out


def test_known_failures_are_per_case_with_their_figures(gate: Gate, tmp_path: Path):
    known = _known_baseline(tmp_path)
    entry = next(c for c in json.loads(known.read_text())["checks"] if (c["kernel"], c["dtype"], c["check"]) == ACC)
    assert [k["verdict"] for k in entry["known"]] == ["fail"] and entry["known"][0]["max_ulp"]["y"] == 5.0
    lines = read_lines("pass.jsonl")
    _set_fail(_acc_lines(lines)[1], 5.0)
    assert gate(write_lines(tmp_path / "same.jsonl", resummarize(lines)), known) == 0  # the same failure
    # every case failing, a billion ULP off
    for ln in _acc_lines(lines):
        _set_fail(ln, 1e9)
    assert gate(write_lines(tmp_path / "all.jsonl", resummarize(lines)), known) == 1
    assert "not a known failing case" in gate.summary and "fails worse" in gate.summary
    # and with all but the known case deleted
    keep = [ln for ln in lines if ln not in _acc_lines(lines)[:1] + _acc_lines(lines)[2:]]
    assert gate(write_lines(tmp_path / "one.jsonl", resummarize(keep)), known) == 1
    assert "fails worse" in gate.summary and "coverage dropped" in gate.summary
    # the known case failing in another way (an error where a fail was known)
    lines = read_lines("pass.jsonl")
    err = _acc_lines(lines)[1]
    err["verdict"], err["reason"] = "error", "RuntimeError: boom"
    del err["errors"]
    assert gate(write_lines(tmp_path / "err.jsonl", resummarize(lines)), known) == 1
    assert "known as fail, now error" in gate.summary


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_n", 16),
        ("inplace", True),
        ("batch_invariant", False),
        ("strided", False),
        ("backward", False),
        ("eps_values", [1e-6]),
        ("devices", ["cuda"]),
        ("variant", "casting=none"),
        ("new_claim", True),
    ],
)
def test_a_loosened_declaration_is_a_regression_listed_first(gate: Gate, baseline: Path, tmp_path: Path, field, value):
    lines = read_lines("pass.jsonl")
    lines[0]["declarations"]["torch_rmsnorm"][field] = value
    assert gate(write_lines(tmp_path / "r.jsonl", lines), baseline) == 1
    summary = gate.summary
    assert summary.startswith("### ⚠️ Declarations changed: 1 loosened")
    assert f"torch\\_rmsnorm: declares {field.replace('_', chr(92) + '_')}" in summary.split("\n\n")[1]
    assert "declarations changed: 1 (1 loosened)" in gate.out


def test_a_tightened_declaration_is_listed_but_passes(gate: Gate, baseline: Path, tmp_path: Path):
    lines = read_lines("pass.jsonl")
    lines[0]["declarations"]["torch_rmsnorm"]["full_range"] = True
    assert gate(write_lines(tmp_path / "r.jsonl", lines), baseline) == 0
    assert gate.summary.startswith("### ⚠️ Declarations changed: 0 loosened, 1 other")


def _malformed(lines: list[dict], how: str) -> list[dict]:
    results = [i for i, ln in enumerate(lines) if ln["type"] == "result"]
    if how == "half-deleted":  # the summary kept as it was
        drop = set(results[::2])
        return [ln for i, ln in enumerate(lines) if i not in drop]
    if how == "half-deleted-resummarized":  # task lines kept: their counts no longer match
        drop = set(results[::2])
        kept = [ln for i, ln in enumerate(lines) if i not in drop]
        return [ln for ln in kept if ln["type"] != "summary"] + resummarize(
            [ln for ln in kept if ln["type"] != "task"]
        )[-1:]
    if how == "every-line-twice":
        return [lines[0], *[ln for ln in lines[1:-1] for _ in range(2)], lines[-1]]
    if how == "duplicates-resummarized":  # the summary recounted to match
        body = [ln for ln in lines[1:-1] for _ in range(3)]
        return [lines[0], *body, resummarize([ln for ln in body if ln["type"] == "result"])[-1]]
    if how == "two-runs":
        return lines + lines
    if how == "second-env":
        return [lines[0], *lines]
    if how == "no-format":
        return [{k: v for k, v in lines[0].items() if k != "format"}, *lines[1:]]
    if how == "no-declarations":
        return [{k: v for k, v in lines[0].items() if k != "declarations"}, *lines[1:]]
    if how == "wrong-task":
        lines = [dict(ln) for ln in lines]
        lines[results[0]]["task"] = "triton_layernorm/fp32/accuracy"
        return lines
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("half-deleted", "summary counts"),
        ("half-deleted-resummarized", "result lines: lines are missing"),
        ("every-line-twice", "summary counts"),
        ("duplicates-resummarized", "duplicated lines"),
        ("two-runs", "second env line"),
        ("second-env", "second env line"),
        ("no-format", "results format None"),
        ("no-declarations", 'no "declarations"'),
        ("wrong-task", "filed under task"),
    ],
)
def test_results_must_be_one_consistent_run(gate: Gate, baseline: Path, tmp_path: Path, how, message):
    path = write_lines(tmp_path / "r.jsonl", _malformed(read_lines("pass.jsonl"), how))
    assert gate(path, baseline) == 2
    assert message in gate.err and len(gate.err.strip().splitlines()) == 1, gate.err
    assert cli("baseline", path, "-o", tmp_path / "b.json") == 2


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"max_ulp_growth": "nan"}, "budget.max_ulp_growth is nan"),
        ({"max_ulp_growth": "inf"}, "budget.max_ulp_growth is inf"),
        ({"min_cases_fraction": -1}, "budget.min_cases_fraction is -1"),
        ({"min_cases_fraction": 2}, "budget.min_cases_fraction is 2"),
        ({"no_such_rule": 1}, "unknown budget"),
    ],
)
def test_budgets_must_be_finite_and_in_range(gate: Gate, baseline: Path, tmp_path: Path, budget, message):
    data = json.loads(baseline.read_text())
    data["budget"].update(budget)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert gate("pass.jsonl", bad) == 2 and message in gate.err
    assert gate("pass.jsonl", baseline, "--proposed-baseline", bad) == 2 and message in gate.err


def test_every_loosening_of_known_failures_is_listed(tmp_path: Path):
    base = baselines_mod.load_baseline(str(_known_baseline(tmp_path)))
    new = baselines_mod.load_baseline(str(_known_baseline(tmp_path)))
    key = next(k for k in new.entries if (k.kernel, k.dtype, k.check) == ACC)
    e = new.entries[key]
    e.verdicts["error"] = 1
    e.known.append(baselines_mod.KnownCase("rmsnorm,9x9,fp32,x=normal", "error"))
    e.known[0] = baselines_mod.KnownCase(e.known[0].case, "fail", (("y", 50.0),))
    messages = [c.message for c in baselines_mod.compare_baselines(base, new) if c.loosened]
    assert any("now accepts error" in m for m in messages), messages
    assert any("accepts a new failing case (error)" in m for m in messages), messages
    assert any("accepts worse errors on known case" in m for m in messages), messages
    new.declarations["torch_rmsnorm"]["max_n"] = 16
    assert any("declares max_n any → 16" in c.message for c in baselines_mod.compare_baselines(base, new) if c.loosened)


@pytest.mark.parametrize("command", ["report", "baseline", "gate-junit", "gate-summary-results", "gate-both"])
def test_a_command_never_overwrites_its_own_input(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str], command: str
):
    results = tmp_path / "r.jsonl"
    results.write_bytes((DATA / "pass.jsonl").read_bytes())
    before = {p: p.read_bytes() for p in (results, baseline)}
    argv = {
        "report": ("report", results, "-o", results),
        "baseline": ("baseline", results, "-o", results),
        "gate-junit": ("gate", results, "--baseline", baseline, "--junit", baseline),
        "gate-summary-results": ("gate", results, "--baseline", baseline, "--summary", tmp_path / "." / "r.jsonl"),
        "gate-both": ("gate", results, "--baseline", baseline, "--summary", tmp_path / "s", "--junit", tmp_path / "s"),
    }[command]
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert "destroy" in err or "name one file" in err, err
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_outputs_never_replace_special_files(tmp_path: Path, baseline: Path, capsys, kind: str):
    target = tmp_path / "precious.md"
    target.write_text("keep me")
    out = tmp_path / "summary.md"
    if kind == "symlink":
        out.symlink_to(target)
    else:
        import os

        os.mkfifo(out)
    assert cli("gate", DATA / "pass.jsonl", "--baseline", baseline, "--summary", out) == 2
    assert f"is a {'symbolic link' if kind == 'symlink' else 'FIFO'}" in capsys.readouterr().err
    assert out.is_symlink() if kind == "symlink" else out.is_fifo()
    assert target.read_text() == "keep me"
    assert cli("report", DATA / "pass.jsonl", "-o", out) == 2
    assert cli("baseline", DATA / "pass.jsonl", "-o", out) == 2


def test_deeply_nested_json_is_malformed(gate: Gate, baseline: Path, tmp_path: Path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"type": "result", "x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert gate(deep, baseline) == 2 and "nested too deeply" in gate.err
    nested = tmp_path / "deep.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    assert gate("pass.jsonl", nested) == 2 and "Traceback" not in gate.err
