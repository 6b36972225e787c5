"""The pytest plugin, run as a kernel repository would run it (pytester, in a fresh process)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from normgate.plugin import pin_gpu, visible_gpus

pytest_plugins = "pytester"
EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "test_my_kernel.py"

BUGGY = '''
import torch

class GemmaRMSNorm(torch.nn.Module):
    """Claims Gemma's (1 + weight) but multiplies by the weight alone (the Liger incident)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(8))
        self.eps = 1e-6

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


def test_gemma(normgate_check):
    normgate_check(torch.nn.RMSNorm(8), name="fine", dtypes=("fp32",), checks=("accuracy",))
    normgate_check(GemmaRMSNorm(), name="my_gemma", op="rmsnorm", casting="gemma", offset=1.0, out="input",
                   dtypes=("bf16",), checks=("accuracy",))
'''


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_docs_example_passes(pytester):
    pytester.makepyfile(test_my_kernel=EXAMPLE.read_text())
    run(pytester, "--normgate-profile", "dev").assert_outcomes(passed=3)


def test_a_failure_prints_a_replay_that_reproduces_it(pytester):
    pytester.makepyfile(test_gemma=BUGGY)
    res = run(pytester, "--normgate-profile", "dev")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "normgate: my_gemma (rmsnorm, casting=gemma,offset=1" in text and "accuracy bf16: fail: y:" in text
    replay = re.search(r"replay: pytest (\S+) --normgate-replay (\S+)", text)
    assert replay, text
    again = run(pytester, replay.group(1), "--normgate-replay", replay.group(2).strip("'"))
    again.assert_outcomes(failed=1)
    assert "on replay" in again.stdout.str() and replay.group(2).strip("'").split(":", 1)[1] in again.stdout.str()


def test_profiles_set_the_search_budget(pytester):
    pytester.makepyfile(test_count='''
import torch

def test_count(normgate_check, request):
    out = normgate_check(torch.nn.RMSNorm(8), dtypes=("fp32",), checks=("accuracy",))
    print("CASES", out.count("pass"))
''')
    counts = {}
    for profile in ("dev", "ci"):
        res = run(pytester, "-s", "--normgate-profile", profile)
        res.assert_outcomes(passed=1)
        counts[profile] = int(re.search(r"CASES (\d+)", res.stdout.str()).group(1))
    # the profile is hypothesis's budget; a case drawn twice (a module's fixed width leaves fewer
    # distinct cases) is checked and recorded once
    assert 5 <= counts["dev"] <= 8 < 20 <= counts["ci"] <= 30, counts
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--normgate-profile", "nightly")
    assert bad.ret != 0 and "invalid choice" in bad.stderr.str()


def test_xdist_workers_are_pinned_to_one_gpu_each(pytester, monkeypatch):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("starts a pytest session of its own, which an outer pytest-xdist worker disturbs; run serially")
    pytest.importorskip("xdist")
    pytester.makepyfile(test_pin='''
import os
import pytest

@pytest.mark.parametrize("i", range(4))
def test_gpu(i, tmp_path_factory):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    (tmp_path_factory.getbasetemp().parent.parent / f"{worker}-{i}").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
''')
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    seen = {p.name.split("-")[0]: p.read_text() for p in pytester.path.parent.rglob("gw*-*")}
    assert seen == {"gw0": "4", "gw1": "5"}


def test_gpu_choice_without_torch(tmp_path):
    assert visible_gpus({}, tmp_path) == []  # the CPU path: no GPUs, nothing pinned
    env: dict[str, str] = {}
    assert pin_gpu("gw3", env, tmp_path) is None and env == {}
    for i in range(3):
        (tmp_path / f"nvidia{i}").touch()
    (tmp_path / "nvidiactl").touch()
    assert visible_gpus({}, tmp_path) == ["0", "1", "2"]
    assert pin_gpu("gw4", env, tmp_path) == "1" and env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,7,-1,3"}, tmp_path) == ["2", "7"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, tmp_path) == []


def test_the_plugin_imports_nothing_heavy():
    code = ("import sys, normgate.plugin; "
            "print(sorted(m for m in ('torch', 'hypothesis', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
