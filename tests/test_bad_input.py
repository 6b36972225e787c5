"""Bad input is a clear message and exit 2, never a traceback of ours; and every string that comes
from a kernel, a file or an exception is escaped in the HTML report and the Markdown summary."""

import json
import re
from pathlib import Path

import pytest
from conftest import normgate_cli

from normgate import cli

BROKEN = Path(__file__).parent / "broken"
DATA = Path(__file__).parent / "data"
RUN = ("run", "--device", "cpu", "--kernels", "torch_rms_norm", "--dtypes", "fp32", "--checks", "contract",
       "--examples", "1")


def _main(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(("argv", "message"), [
    (("run", "--device", "cpu", "--kernels", "no_such_kernel"), "unknown kernel 'no_such_kernel'"),
    (("run", "--device", "cpu", "--ops", "convolution"),
     "unknown op 'convolution'; known: groupnorm, layernorm, rmsnorm"),
    (("run", "--device", "cpu", "--checks", "speed"), "unknown check 'speed'"),
    (("run", "--device", "cpu", "--load", str(BROKEN / "bad_dtype.py")),
     "candidate 'broken_dtype' declares dtype 'fp8': unknown dtype 'fp8'"),
    ((*RUN, "--workers", "many"), "--workers many: a number or 'auto'"),
    ((*RUN, "--timeout", "0"), "--timeout 0: must be greater than 0"),
    ((*RUN, "--kernel-timeout", "-5"), "--kernel-timeout -5: must be greater than 0"),
    ((*RUN, "--examples", "0"), "--examples 0: must be greater than 0"),
    ((*RUN, "--report", "/nonexistent-dir/report.html"), "cannot write the report to /nonexistent-dir/report.html"),
    ((*RUN, "--resume", str(DATA / "malformed.jsonl")), "malformed.jsonl:4: malformed results line"),
    ((*RUN, "--resume", "/nonexistent-dir/r.jsonl"), "--resume /nonexistent-dir/r.jsonl: no such file"),
    (("report", str(DATA / "malformed.jsonl"), "-o", "{tmp}/r.html"), "malformed.jsonl:4"),
    (("report", str(DATA / "pass.jsonl"), "-o", "/nonexistent-dir/r.html"), "/nonexistent-dir does not exist"),
])
def test_usage_and_input_errors_exit_2_with_a_message(capsys, tmp_path, argv, message):
    code, err = _main(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_a_load_file_that_fails_to_import_shows_its_own_traceback(capsys):
    code, err = _main(capsys, "run", "--device", "cpu", "--load", str(BROKEN / "bad_import.py"))
    assert code == 2
    assert f"--load {BROKEN / 'bad_import.py'} failed to import" in err
    # the cause, with the user's file and line, as the user needs it to fix their file
    assert f'File "{BROKEN / "bad_import.py"}", line 7, in _helper' in err
    assert err.rstrip().endswith("RuntimeError: bad_import: this file is broken on purpose")


def test_resume_of_another_runs_file_is_refused(capsys, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"type": "env", "device": "cpu", "seed": 0, "examples": 1}) + "\n")
    code, err = _main(capsys, *RUN, "--seed", "7", "--resume", str(out))
    assert code == 2 and "that run used other settings (seed 0 there, 7 now" in err


def test_a_baseline_cut_short_is_named_with_its_line(capsys, tmp_path):
    baseline = tmp_path / "baseline.json"
    assert _main(capsys, "baseline", str(DATA / "pass.jsonl"), "-o", str(baseline))[0] == 0
    baseline.write_text(baseline.read_text()[:120])
    code, err = _main(capsys, "gate", str(DATA / "pass.jsonl"), "--baseline", str(baseline))
    assert code == 2 and re.search(re.escape(str(baseline)) + r":\d+: not valid JSON", err), err


# A kernel whose name and error are hostile HTML and Markdown; it passes unless $HOSTILE_BREAK is set.
HOSTILE = '''
import os

import normgate
from normgate.kernels.baselines import torch_rms_norm

REASON = "<img src=x onerror=alert(2)> | pipe ``` fence [link](javascript:alert(3)) *bold* _u_ <!-- @everyone"


def hostile(x, w, eps):
    if os.environ.get("HOSTILE_BREAK"):
        raise ValueError(REASON)
    return torch_rms_norm(x, w, eps)


normgate.register("<script>alert(1)</script>", hostile, op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="gemma"), dtypes=("fp32",))
'''
NAME = "<script>alert(1)</script>"


def test_strings_from_kernels_and_errors_are_escaped_in_report_and_summary(capsys, tmp_path, monkeypatch):
    kernel_file = tmp_path / "hostile.py"
    kernel_file.write_text(HOSTILE)
    run = ("run", "--load", str(kernel_file), "--kernels", NAME, "--checks", "accuracy", "--examples", "2",
           "--device", "cpu", "--workers", "0")
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    assert normgate_cli(*run, "--out", str(good)).returncode == 0
    monkeypatch.setenv("HOSTILE_BREAK", "1")
    proc = normgate_cli(*run, "--out", str(bad))
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in map(json.loads, bad.read_text().splitlines()) if ln.get("verdict") == "error"]
    assert errors and errors[0]["kernel"] == NAME and "onerror=alert(2)" in errors[0]["reason"]

    html = tmp_path / "report.html"
    assert _main(capsys, "report", str(bad), "-o", str(html))[0] == 0
    page = html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert NAME not in page and "<img src=x" not in page
    assert len(re.findall(r"<script", page)) == 1  # the report's own script, nothing else

    baseline, summary = tmp_path / "baseline.json", tmp_path / "summary.md"
    assert _main(capsys, "baseline", str(good), "-o", str(baseline))[0] == 0
    code, _ = _main(capsys, "gate", str(bad), "--baseline", str(baseline), "--summary", str(summary))
    assert code == 1  # the kernel now errors: a regression
    md = summary.read_text()
    # code blocks are verbatim in Markdown (the replay command must stay copyable), so what counts
    # is that no block is closed early by its content; everything outside them must be escaped
    blocks = re.findall(r"^(`{3,})[^\n]*\n(.*?)^\1[ \t]*$", md, re.M | re.S)
    assert blocks and all(fence not in body for fence, body in blocks)
    assert any(f"normgate replay '{NAME}@accuracy:" in body for _, body in blocks)
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1[ \t]*$", "", md, flags=re.M | re.S)
    assert "alert(1)" in prose and "onerror=alert(2)" in prose  # the strings are there, escaped:
    unescaped = [r"(?<!\\)<(script|img|!--)", r"(?<!\\)\[link", r"(?<!\\)\| pipe", r"(?<!\\)```"]
    assert not [p for p in unescaped if re.search(p, prose)], prose


# ----------------------------------------------------------------------------- probes

UNKNOWN_OP = '''
import normgate
from normgate.kernels.baselines import torch_rms_norm

normgate.register("wrong_op", torch_rms_norm, op="rmsnrom", variant=normgate.RMSNormVariant(casting="gemma"),
                  dtypes=("fp32",))
'''
EXITS = "import os\nos._exit(0)\n"
NOISY = '''
import normgate

def noisy(x, w, eps):
    raise ValueError("\\n::error file=x.py::forged annotation\\x1b[2J\\x1b[31mred")

normgate.register("noisy", noisy, op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma"), dtypes=("fp32",))
'''


def test_an_op_the_variant_contradicts_is_a_usage_error(tmp_path):
    """The op follows from the variant's type: a mistyped op= is refused at registration."""
    f = tmp_path / "wrong_op.py"
    f.write_text(UNKNOWN_OP)
    proc = normgate_cli("run", "--device", "cpu", "--load", str(f), "--kernels", "wrong_op", "--checks", "contract",
                        "--examples", "1", "--out", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2, proc.stderr
    assert "declares op='rmsnrom', but its variant RMSNormVariant is op 'rmsnorm'" in proc.stderr, proc.stderr


def test_a_load_file_that_exits_never_makes_run_pass(tmp_path):
    f = tmp_path / "exits.py"
    f.write_text(EXITS)
    proc = normgate_cli(*RUN, "--load", str(f), "--out", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "called os._exit(0) while being imported" in proc.stderr


def test_deeply_nested_json_under_resume_is_a_clean_exit_2(capsys, tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"type": "env", "x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    code, err = _main(capsys, *RUN, "--resume", str(deep))
    assert code == 2 and "nested too deeply" in err and "Traceback" not in err, err


def test_resume_with_another_out_is_refused(capsys, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text((DATA / "pass.jsonl").read_text())
    code, err = _main(capsys, *RUN, "--resume", str(a), "--out", str(b))
    assert code == 2 and f"--resume {a} continues that file in place" in err
    assert not b.exists() and a.read_text() == (DATA / "pass.jsonl").read_text()


def test_resume_of_an_older_results_format_is_refused(capsys, tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"type": "env", "device": "cpu", "seed": 0, "examples": 1}) + "\n")
    code, err = _main(capsys, *RUN, "--resume", str(old))
    assert code == 2 and "results format None there" in err, err


def test_workers_are_capped(tmp_path):
    proc = normgate_cli(*RUN, "--workers", "1000", "--out", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--workers 1000: using 1" in proc.stderr  # one task: one worker
    env = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert env["workers"] == 1


def test_a_worker_that_fails_to_start_leaves_the_out_file_alone(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text((DATA / "pass.jsonl").read_text())
    # imports in normgate, fails in a fresh worker process
    f = tmp_path / "parent_only.py"
    f.write_text("import os\nif os.environ.get('NORMGATE_SUPERVISOR_PID'):\n    raise RuntimeError('no')\n"
                 + UNKNOWN_OP.replace("wrong_op", "fine_op").replace("rmsnrom", "rmsnorm"))
    proc = normgate_cli("run", "--device", "cpu", "--load", str(f), "--kernels", "fine_op", "--checks", "contract",
                        "--examples", "1", "--out", str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert out.read_text() == (DATA / "pass.jsonl").read_text()


@pytest.mark.parametrize("how", ["report-is-out", "report-is-resume", "out-is-load", "out-is-fifo", "out-is-symlink"])
def test_run_never_overwrites_its_own_input_or_a_special_file(capsys, tmp_path, how):
    import os

    res = tmp_path / "r.jsonl"
    res.write_text((DATA / "pass.jsonl").read_text())
    kept = res.read_text()
    argv = {
        "report-is-out": ("--out", str(res), "--report", str(res)),
        "report-is-resume": ("--resume", str(res), "--report", str(res)),
        "out-is-load": ("--load", str(res), "--out", str(res)),
        "out-is-fifo": ("--out", str(tmp_path / "fifo")),
        "out-is-symlink": ("--out", str(tmp_path / "link")),
    }[how]
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(res)
    if how == "out-is-load":  # a --load file is read before the run; use a real one
        argv = ("--load", str(BROKEN / "raises.py"), "--out", str(BROKEN / "raises.py"))
        kept_load = (BROKEN / "raises.py").read_text()
    code, err = _main(capsys, *RUN, *argv)
    assert code == 2, err
    assert "destroy" in err or "name one file" in err or "regular files only" in err, err
    assert res.read_text() == kept and (tmp_path / "fifo").is_fifo() and (tmp_path / "link").is_symlink()
    if how == "out-is-load":
        assert (BROKEN / "raises.py").read_text() == kept_load


def test_kernel_text_on_stderr_is_sanitized(tmp_path):
    f = tmp_path / "noisy.py"
    f.write_text(NOISY)
    proc = normgate_cli("run", "--device", "cpu", "--load", str(f), "--kernels", "noisy", "--checks", "accuracy",
                        "--examples", "2", "--out", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "forged annotation" in proc.stderr
    assert "\x1b" not in proc.stderr
    assert not [ln for ln in proc.stderr.splitlines() if ln.lstrip().startswith("::")], proc.stderr
