"""The five incidents that started normgate, each caught by the generic checks: no test here
knows what the bug is, only which check should report it."""

import json

import pytest
from conftest import INCIDENTS, normgate_cli

# incident file -> the checks that must report it (at least the first one)
INCIDENT_CHECKS = {
    "eps_attribute": {"accuracy"},
    "gemma_offset": {"accuracy"},
    "zero_input_dw": {"accuracy", "poisoned"},
    "mixed_dtype": {"contract"},
    "low_precision": {"accuracy"},
}


# The incident that is a real Triton kernel runs under the interpreter, where batch invariance (its
# batches either side of M = 256) and the identities cost most of a CI run's minutes: it runs the
# other checks, its own two among them. The others run every check.
CHECKS = {"zero_input_dw": ("--checks", "accuracy,contract,repeat,poisoned")}


@pytest.mark.parametrize("incident", sorted(INCIDENT_CHECKS))
def test_incident_is_caught(incident, tmp_path):
    out = tmp_path / "r.jsonl"
    proc = normgate_cli("run", "--load", str(INCIDENTS / f"{incident}.py"), "--kernels", "incident_*",
                        "--examples", "60", "--device", "cpu", *CHECKS.get(incident, ()), "--out", str(out))
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    failing = {ln["check"] for ln in lines if ln.get("verdict") == "fail"}
    assert INCIDENT_CHECKS[incident] <= failing, (failing, proc.stderr[-2000:])
    for ln in lines:
        if ln.get("verdict") == "fail":
            assert ln["replay"].startswith("normgate replay ") and "--load" in ln["replay"]
    assert lines[-1]["type"] == "summary" and lines[-1]["fail"] >= 1


def test_zero_input_dw_replays_with_the_garbage_shown(tmp_path):
    out = tmp_path / "r.jsonl"
    normgate_cli("run", "--load", str(INCIDENTS / "zero_input_dw.py"), "--kernels", "incident_*", "--checks",
                 "accuracy", "--dtypes", "fp32", "--examples", "60", "--device", "cpu", "--out", str(out))
    fail = next(json.loads(ln) for ln in out.read_text().splitlines() if '"verdict": "fail"' in ln)
    assert "dweight" in fail["reason"]
    # the minimal case has fewer rows than the kernel's 8 programs
    assert fail["shape"][0] < 8
    proc = normgate_cli("replay", fail["case"] and fail["replay"].split(" ", 2)[2].split(" --load")[0],
                        "--load", str(INCIDENTS / "zero_input_dw.py"), "--device", "cpu")
    assert proc.returncode == 1
    assert "dweight" in proc.stdout and "expected" in proc.stdout
