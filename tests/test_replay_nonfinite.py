"""`normgate replay` on the failures a user most needs to see: NaN and inf in the worst elements."""

from conftest import normgate_cli

KERNELS = '''
import torch
import normgate

V = normgate.RMSNormVariant(casting="gemma")


@normgate.register("nan_rmsnorm", op="rmsnorm", variant=V, dtypes=("fp32",), devices=("cpu",), backward=False)
def nan_rmsnorm(x, weight, eps):
    return torch.full_like(x, float("nan"))


@normgate.register("inf_rmsnorm", op="rmsnorm", variant=V, dtypes=("fp32",), devices=("cpu",), backward=False)
def inf_rmsnorm(x, weight, eps):
    return torch.full_like(x, float("-inf"))
'''

CASE = "rmsnorm,2x3,fp32,x=normal,dy=normal,w=normal,eps=1e-06,contiguous,seed=1"


def test_replay_prints_nan_and_inf_worst_elements(tmp_path):
    path = tmp_path / "bad_kernels.py"
    path.write_text(KERNELS)
    # an infinity counts as the edge of the finite range (a huge but finite error); NaN is inf ULP
    for kernel, shown, ulp in (("nan_rmsnorm", "nan", "inf"), ("inf_rmsnorm", "-inf", None)):
        proc = normgate_cli("replay", f"{kernel}@accuracy:{CASE}", "--load", str(path), "--device", "cpu")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "Unknown format code" not in proc.stderr
        rows = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("  (")]
        assert rows, proc.stdout
        # index (2 tokens for a 2-D index), expected, got, ULP, bound
        assert all(r[3] == shown for r in rows), proc.stdout
        assert ulp is None or all(r[4] == ulp for r in rows), proc.stdout
