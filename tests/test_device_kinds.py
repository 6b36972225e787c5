"""A baseline per device kind: the results of each GPU model are judged against their own section,
a regression is named with its kind, and a kind the baseline has never seen fails closed."""

from __future__ import annotations

import json
from pathlib import Path

from test_gate import DATA, cli, read_lines, write_lines

from normgate.reports import baselines as baselines_mod


def on_gpu(name: str, gpu: str, tmp: Path) -> Path:
    """A results file of tests/data as if run on ``gpu``."""
    lines = [dict(ln, gpu=gpu) if ln["type"] == "env" else ln for ln in read_lines(name)]
    return write_lines(tmp / f"{Path(name).stem}-{gpu.split()[-1].lower()}.jsonl", lines)


def gate(tmp: Path, capsys, *argv) -> tuple[int, str]:
    summary = tmp / "summary.md"
    summary.unlink(missing_ok=True)
    capsys.readouterr()
    code = cli("gate", *argv, "--summary", summary)
    return code, summary.read_text() if summary.exists() else capsys.readouterr().err


def test_a_baseline_holds_a_section_per_device_kind(tmp_path):
    h200 = on_gpu("pass.jsonl", "NVIDIA H200", tmp_path)
    out = tmp_path / "baseline.json"
    assert cli("baseline", DATA / "pass.jsonl", h200, "-o", out) == 0
    data = json.loads(out.read_text())
    assert data["format"] == baselines_mod.SET_FORMAT
    assert sorted(data["kinds"]) == ["nvidia-h100-80gb-hbm3", "nvidia-h200"]
    sections = baselines_mod.load_baselines(str(out))
    assert all(baselines_mod.baseline_kind(b) == k for k, b in sections.items())
    # one kind alone keeps the plain format
    single = tmp_path / "single.json"
    assert cli("baseline", DATA / "pass.jsonl", "-o", single) == 0
    assert json.loads(single.read_text())["format"] == baselines_mod.FORMAT


def test_a_regression_on_one_kind_fails_the_gate_named_with_that_kind(tmp_path, capsys):
    h200_pass = on_gpu("pass.jsonl", "NVIDIA H200", tmp_path)
    h200_fail = on_gpu("fail.jsonl", "NVIDIA H200", tmp_path)
    baseline = tmp_path / "baseline.json"
    assert cli("baseline", DATA / "pass.jsonl", h200_pass, "-o", baseline) == 0

    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", h200_fail, "--baseline", baseline)
    assert code == 1
    rows = [ln.replace("\\", "") for ln in summary.splitlines() if ln.startswith("| ")]
    rows = [ln for ln in rows if "[nvidia-" in ln]
    assert rows and all("[nvidia-h200]" in ln for ln in rows), summary  # only H200's checks regressed
    # the other kind's results alone pass: its section judges them, H200's is only noted
    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", "--baseline", baseline)
    assert code == 0, summary
    assert "nvidia-h200 is in the baseline but no results of it were given" in summary
    # ... unless the workflow says that kind must report
    code, _ = gate(tmp_path, capsys, DATA / "pass.jsonl", "--baseline", baseline, "--expect-kind", "nvidia-h200")
    assert code == 1
    # both kinds clean: pass
    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", h200_pass, "--baseline", baseline)
    assert code == 0, summary


def test_a_kind_the_baseline_has_never_seen_fails_closed_unless_accepted(tmp_path, capsys):
    h200 = on_gpu("pass.jsonl", "NVIDIA H200", tmp_path)
    a100 = on_gpu("pass.jsonl", "NVIDIA A100", tmp_path)
    baseline = tmp_path / "baseline.json"
    assert cli("baseline", DATA / "pass.jsonl", h200, "-o", baseline) == 0
    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", h200, a100, "--baseline", baseline)
    assert code == 1 and "nvidia-a100" in summary and "--accept-new-kind nvidia-a100" in summary
    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", h200, a100, "--baseline", baseline,
                         "--accept-new-kind", "nvidia-a100")
    assert code == 0, summary
    # a one-kind baseline and results of another GPU: judged, and the kind fails unless accepted
    single = tmp_path / "h100.json"
    assert cli("baseline", DATA / "pass.jsonl", "-o", single) == 0
    assert gate(tmp_path, capsys, h200, "--baseline", single)[0] == 1
    assert gate(tmp_path, capsys, h200, "--baseline", single, "--accept-new-kind", "nvidia-h200")[0] == 0


def test_two_runs_of_one_kind_are_a_usage_error(tmp_path, capsys):
    copy = write_lines(tmp_path / "copy.jsonl", read_lines("pass.jsonl"))
    baseline = tmp_path / "baseline.json"
    assert cli("baseline", DATA / "pass.jsonl", "-o", baseline) == 0
    code, err = gate(tmp_path, capsys, DATA / "pass.jsonl", copy, "--baseline", baseline)
    assert code == 2 and "two runs of device kind" in err
    assert cli("baseline", DATA / "pass.jsonl", copy, "-o", tmp_path / "b2.json") == 2


def test_dropping_a_kind_from_the_proposed_baseline_is_a_listed_loosening(tmp_path, capsys):
    h200 = on_gpu("pass.jsonl", "NVIDIA H200", tmp_path)
    both, one = tmp_path / "both.json", tmp_path / "one.json"
    assert cli("baseline", DATA / "pass.jsonl", h200, "-o", both) == 0
    assert cli("baseline", DATA / "pass.jsonl", "-o", one) == 0
    code, summary = gate(tmp_path, capsys, DATA / "pass.jsonl", h200, "--baseline", both,
                         "--proposed-baseline", one)
    assert code == 0
    assert "**loosened**: device kind nvidia-h200: its section is dropped from the baseline" in summary
