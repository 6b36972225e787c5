"""The results reader and the HTML report, fed hand-made results (tests/data, see make_data.py)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from normgate.reports.charts import ratio_histogram
from normgate.reports.commands import add_commands
from normgate.reports.html import render_report
from normgate.reports.load import (
    LoadError,
    clean_text,
    group_checks,
    label_runs,
    load_bench,
    load_results,
    parse_results,
)

DATA = Path(__file__).parent / "data"
XSS = "<script>alert(1)</script>"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="normgate")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def read_lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    return path


def report(tmp_path: Path, *inputs: str | Path, bench: tuple[str, ...] = ()) -> str:
    out = tmp_path / "report.html"
    args = [DATA / i if isinstance(i, str) else i for i in inputs]
    for b in bench:
        args += ["--bench", DATA / b]
    assert cli("report", *args, "-o", out) == 0
    return out.read_text()


def section(html: str, ident: str) -> str:
    start = html.index(f'<section id="{ident}"')
    return html[start : html.index("</section>", start)]


# ----------------------------------------------------------------------------- reading results


def test_clean_run_loads_without_problems():
    run = load_results(str(DATA / "pass.jsonl"))
    assert run.env is not None and run.env["gpu"] == "NVIDIA H100 80GB HBM3"
    assert run.summary is not None and not run.problems
    assert run.verdict_counts() == {"pass": 148, "skip": 2, "range": 1}
    groups = group_checks(run.results)
    assert len(groups) == 30
    acc = next(
        g
        for k, g in groups.items()
        if k.kernel == "torch_rmsnorm" and k.dtype == "bf16" and k.check == "accuracy"
    )
    # the range line is counted as a verdict but kept out of the accuracy statistics
    assert acc.verdicts["range"] == 1 and acc.outputs["y"].cases == 5 and acc.outputs["y"].max_ulp == 0.5


def test_malformed_line_names_file_and_line():
    with pytest.raises(LoadError, match=r"malformed\.jsonl:4: not valid JSON"):
        load_results(str(DATA / "malformed.jsonl"))


def test_line_cut_mid_write_is_an_error_with_a_hint():
    text = (DATA / "pass.jsonl").read_text()
    cut = text[: text.rindex("\n", 0, len(text) - 1) + 40]  # the last line, cut after 39 characters
    with pytest.raises(LoadError, match=r"x\.jsonl:\d+: .*cut off.*--resume"):
        parse_results("x.jsonl", cut.splitlines(keepends=True))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"kernel": "k"}', 'no string "type"'),
        ('{"type": "result", "kernel": "k", "check": "accuracy", "dtype": "bf16"}', "lacks verdict"),
        (
            '{"type": "result", "kernel": "k", "check": "accuracy", "dtype": "bf16", "verdict": "ok"}',
            "unknown verdict 'ok'",
        ),
        (
            '{"type": "result", "kernel": "k", "check": "a", "dtype": "b", "verdict": "pass", "errors": [1]}',
            '"errors" must map',
        ),
    ],
)
def test_bad_lines_are_errors(line: str, message: str):
    env = json.dumps({"type": "env"}) + "\n"
    with pytest.raises(LoadError, match=re.escape(message)) as e:
        parse_results("r.jsonl", [env, line + "\n"])
    assert str(e.value).startswith("r.jsonl:2: ")


def test_incomplete_runs_are_flagged_not_accepted():
    codes = lambda name: {p.code for p in load_results(str(DATA / name)).problems}  # noqa: E731
    assert codes("truncated.jsonl") == {"no-summary"}
    assert codes("interrupted.jsonl") == {"interrupted"}
    lines = read_lines("pass.jsonl")
    no_env = parse_results("n.jsonl", [json.dumps(ln) + "\n" for ln in lines[1:]])
    assert {p.code for p in no_env.problems} == {"no-env"}
    lines[-1]["fail"] = 3  # the summary claims failures the file does not hold
    lost = parse_results("l.jsonl", [json.dumps(ln) + "\n" for ln in lines])
    assert {p.code for p in lost.problems} == {"summary-mismatch"}


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(LoadError, match="no such file"):
        load_results(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LoadError, match="empty results file"):
        load_results(str(tmp_path / "empty.jsonl"))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LoadError, match="not UTF-8"):
        load_results(str(tmp_path / "bin.jsonl"))


def test_bench_json(tmp_path: Path):
    bf = load_bench(str(DATA / "bench.json"))
    assert len(bf.benches) == 66 and bf.skipped == 1  # one benchmark without normgate extra_info
    b = bf.benches[0]
    assert (b.kernel, b.op, b.pass_, b.M, b.N) == ("triton_rmsnorm", "rmsnorm", "forward", 16384, 1024)
    data = json.loads((DATA / "bench.json").read_text())
    del data["benchmarks"][0]["extra_info"]["N"]
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(LoadError, match="extra_info lacks N"):
        load_bench(str(tmp_path / "b.json"))
    (tmp_path / "c.json").write_text('{"benchmarks": [')
    with pytest.raises(LoadError, match=r"c\.json:1: not valid JSON"):
        load_bench(str(tmp_path / "c.json"))


def test_labels_are_unique():
    runs = [load_results(str(DATA / "pass.jsonl")), load_results(str(DATA / "pass.jsonl"))]
    label_runs(runs)
    assert len({r.label for r in runs}) == 2


def test_clean_text_drops_terminal_codes():
    assert clean_text("\x1b[31mred\x1b[0m\x00") == "red\ufffd"


# ----------------------------------------------------------------------------- the report


class TagBalance(HTMLParser):
    """Every non-void element closed in order: catches template slips that browsers silently repair."""

    VOID = {"meta", "input", "br", "hr", "img", "link", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()}, open: {self.stack[-3:]}")
        else:
            self.stack.pop()


def assert_well_formed(html: str) -> None:
    parser = TagBalance()
    parser.feed(html)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, parser.stack


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [f"{tag} {k}={v}" for k, v in attrs if k in ("src", "href", "srcset", "action", "data")]


def assert_offline(html: str) -> None:
    """No fetch of anything: only in-page links, no stylesheet links, no CSS url() or @import."""
    parser = Links()
    parser.feed(html)
    assert all(r.split("=", 1)[1].startswith("#") for r in parser.refs), parser.refs
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html


def test_report_of_a_failing_run(tmp_path: Path):
    html = report(tmp_path, "fail.jsonl", bench=("bench.json",))
    assert_well_formed(html)
    assert_offline(html)
    summary = section(html, "summary")
    # failures first: the first kernel row is the erroring one, then the failing one
    rows = re.findall(r'<span class="k"[^>]*>([^<]+)</span>', summary)
    assert rows[:2] == ["triton_rmsnorm", "triton_rmsnorm"]
    first_row = summary[summary.index("<tbody>") : summary.index("</tr>", summary.index("<tbody>"))]
    assert "st-error" in first_row and "fp32" in first_row
    failures = section(html, "failures")
    assert failures.count('class="failure') == 2
    assert "normgate replay &#39;triton_rmsnorm@accuracy:rmsnorm,2x5,bf16,x=tiny" in failures
    assert "1.5 ULP &gt; bound 0.53 ULP" in failures and "0.0001235" in failures  # reason, worst element
    assert "\x1b" not in html and "CUDA error: an illegal memory access" in failures
    accuracy = section(html, "accuracy")
    assert "no: 1/5" in accuracy  # worse than eager on the failing case
    determinism = section(html, "determinism")
    assert determinism.count("st-error") == 1
    ranges = section(html, "ranges")
    assert "x*x overflows the fp32 accumulator" in ranges and "range" in ranges
    assert "x*x overflows" not in failures  # a range limit is information, not a failure
    perf = section(html, "performance")
    assert perf.count('<svg class="chart"') == 3  # rmsnorm fwd, rmsnorm fwd+bwd, layernorm fwd
    assert "copy limit" in perf and "Small batches" in perf and "M = 128, N = 4096" in perf
    env = section(html, "environment")
    assert "580.159.04" in env and "2.11.0+cu130" in env


def test_benchmarks_of_two_gpus_keep_their_own_copy_limits(tmp_path: Path):
    """Each file's kernels and copy limit are lines of their own: one GPU's copy is not the
    other's limit."""
    data = json.loads((DATA / "bench.json").read_text())
    for b in data["benchmarks"]:
        if "N" in b["extra_info"]:  # (one benchmark is not normgate's)
            b["extra_info"].update(gpu="NVIDIA H200", copy_gbps=4000 + b["extra_info"]["N"] / 1024)
    (tmp_path / "h200.json").write_text(json.dumps(data))
    html = report(tmp_path, "pass.jsonl", bench=("bench.json", str(tmp_path / "h200.json")))
    assert_well_formed(html)
    perf = section(html, "performance")
    assert "copy limit · bench:" in perf and "copy limit · h200:" in perf
    assert "copy limit: N=" not in perf
    assert "copy limit · h200: N=1024, 4,001 GB/s" in perf and "copy limit · bench: N=1024, 2,650 GB/s" in perf


def test_script_hash_in_csp_matches_the_script(tmp_path: Path):
    html = report(tmp_path, "pass.jsonl")
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html


def test_every_string_from_results_is_escaped(tmp_path: Path):
    html = report(tmp_path, "xss.jsonl")
    assert_well_formed(html)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "alert(4)</script>" not in html and "</pre><script>" not in html
    assert "<b>GPU</b>" not in html and "<i>normal</i>" not in html and "<u>note</u>" not in html
    assert len(re.findall(r"<script", html)) == 1
    assert "\x00" not in html and "\x07" not in html


def test_incomplete_run_is_flagged_in_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    html = report(tmp_path, "truncated.jsonl")
    problems = section(html, "problems")
    assert "no summary line" in problems
    assert "no summary line" in capsys.readouterr().err


def test_interpreter_runs_are_explained(tmp_path: Path):
    lines = read_lines("pass.jsonl")
    lines[0]["interpreter"] = True
    html = report(tmp_path, write_lines(tmp_path / "ci.jsonl", lines))
    assert "Interpreter run" in html and "TRITON_INTERPRET=1" in html and "truncates" in html


def test_runs_side_by_side(tmp_path: Path):
    html = report(tmp_path, "pass.jsonl", "fail.jsonl", "worse.jsonl", "missing_kernel.jsonl")
    assert_well_formed(html)
    changes = re.findall(r'<section id="changes\d*">.*?</section>', html, re.S)
    assert len(changes) == 3
    assert "fail against pass" in changes[0] and changes[0].count(">new failure</span>") == 2
    assert "accuracy worse" in changes[1] and "dx: 6 → 19" in changes[1]
    assert changes[2].count(">missing</span>") == 10
    assert "<th>run</th>" in section(html, "summary")


def test_fixed_is_reported(tmp_path: Path):
    html = report(tmp_path, "fail.jsonl", "pass.jsonl")
    assert "2 fixed" in html


def test_ratio_histogram_bins():
    bars = ratio_histogram([0.1, 0.3, 0.9, 1.0, 1.5, 7.0, float("nan")])
    assert [b["n"] for b in bars] == [1, 1, 0, 2, 1, 2]
    assert [b["over"] for b in bars] == [False] * 4 + [True] * 2


def test_render_report_is_deterministic_for_a_fixed_date():
    import datetime as dt

    runs = [load_results(str(DATA / "fail.jsonl"))]
    label_runs(runs)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert render_report(runs, now=now) == render_report(runs, now=now)


# ----------------------------------------------------------------------------- command-line errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["malformed.jsonl"], "malformed.jsonl:4: not valid JSON"),
        (["missing.jsonl"], "missing.jsonl: no such file"),
        (["pass.jsonl", "--bench", "pass.jsonl"], "pass.jsonl:2: not valid JSON (Extra data)"),
    ],
)
def test_report_input_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args, message):
    argv = [str(DATA / a) if a.endswith((".jsonl", ".json")) else a for a in args]
    assert cli("report", *argv, "-o", tmp_path / "r.html") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_report_unwritable_output_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert cli("report", DATA / "pass.jsonl", "-o", tmp_path / "no" / "r.html") == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli("report", DATA / "pass.jsonl", "-o", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err


def test_report_does_not_leave_temporary_files(tmp_path: Path):
    shutil.copy(DATA / "pass.jsonl", tmp_path / "r.jsonl")
    assert cli("report", tmp_path / "r.jsonl", "-o", tmp_path / "r.html") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.jsonl"]


def test_write_report_for_normgate_run(tmp_path: Path):
    """The entry point ``normgate run --report`` uses: LoadError for bad inputs, OSError for bad outputs."""
    from normgate.reports.html import write_report

    out = tmp_path / "r.html"
    write_report([str(DATA / "pass.jsonl")], str(out), bench=[str(DATA / "bench.json")])
    assert "Performance" in out.read_text()
    with pytest.raises(LoadError):
        write_report([str(DATA / "malformed.jsonl")], str(tmp_path / "x.html"))
    with pytest.raises(OSError):
        write_report([str(DATA / "pass.jsonl")], str(tmp_path / "missing" / "r.html"))
