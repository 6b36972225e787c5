"""scripts/field_pkg.py (Unsloth's norm kernels without the rest of Unsloth), the declarations
register_installed reads from an Unsloth release's source, and scripts/field-check.sh's plan."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from normgate import field

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("field_pkg", ROOT / "scripts" / "field_pkg.py")
field_pkg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(field_pkg)

RMS = (
    "import torch\n"
    "from .utils import calculate_settings\n"
    "from . import launch\n"
    "try:\n"
    "    from ..device_type import DEVICE_TYPE\n"
    "except ImportError:\n"
    "    pass\n"
    "def later():\n"
    "    from .fp8 import never  # inside a function: not needed at import\n"
)
UTILS = "import bitsandbytes as bnb\nfrom .indexing import long_indexing\n"


def _wheel(tmp_path: Path, files: dict[str, str]) -> Path:
    path = tmp_path / "unsloth-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_extract_takes_the_module_level_closure_of_the_norm_kernels_and_nothing_else(tmp_path):
    wheel = _wheel(tmp_path, {
        "unsloth/__init__.py": "import everything\n",
        "unsloth/kernels/rms_layernorm.py": RMS,
        "unsloth/kernels/utils.py": UTILS,
        "unsloth/kernels/launch.py": "",
        "unsloth/kernels/indexing.py": "",
        "unsloth/kernels/fp8.py": "",
        "unsloth/kernels/swiglu.py": "",
        "unsloth/device_type.py": "",
    })
    got = field_pkg.extract(str(wheel), str(tmp_path / "src"))
    assert got == ["unsloth/device_type.py", "unsloth/kernels/indexing.py", "unsloth/kernels/launch.py",
                   "unsloth/kernels/rms_layernorm.py", "unsloth/kernels/utils.py"]
    assert not (tmp_path / "src" / "unsloth" / "__init__.py").exists()  # the real one imports the world


def test_build_gives_empty_inits_and_stands_in_only_for_what_is_missing(tmp_path):
    src = tmp_path / "src" / "unsloth" / "kernels"
    src.mkdir(parents=True)
    (src / "rms_layernorm.py").write_text(RMS)
    (src / "utils.py").write_text(UTILS)
    written = field_pkg.build(str(tmp_path / "src"), str(tmp_path / "pkg"))
    assert (tmp_path / "pkg" / "unsloth" / "__init__.py").read_text() == ""
    assert (tmp_path / "pkg" / "unsloth" / "kernels" / "__init__.py").read_text() == ""
    assert "unsloth_zoo" in written and ("bitsandbytes" in written) == field_pkg._absent("bitsandbytes")
    (src / "utils.py").write_text("try:\n    import bitsandbytes as bnb\nexcept Exception:\n    bnb = None\n")
    assert "bitsandbytes" not in field_pkg.build(str(tmp_path / "src"), str(tmp_path / "pkg"))
    # what the kernels' modules read from unsloth_zoo at import; anything else is a placeholder that
    # raises only when called
    out = subprocess.run([sys.executable, "-c",
                          "from unsloth_zoo.utils import Version; from unsloth_zoo.log import logger; "
                          "from unsloth_zoo.temporary_patches.common import torch_compile; "
                          "from unsloth_zoo.patching_utils import patch_layernorm; "
                          "assert Version('2.4') < Version('2.10') and torch_compile(len) is len "
                          "and torch_compile(fullgraph=True)(len) is len\n"
                          "try:\n    patch_layernorm()\nexcept RuntimeError as e:\n    print(e)"],
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "not installed" in out.stdout


@pytest.mark.parametrize("src, grads, inplace", [
    ("        return dX, None, None, None\n", ("dx",), True),                # 2024.8: dX into dY, no dW
    ("        dX = dX.view(*shape)\n        return dX, dW, None, None, None, None\n", None, False),
    ("            return dX.view(*shape), None, None, None\n"
     "        return dX.view(*shape), dW, dB, None\n", None, False),             # fast_layernorm, 2026.10.9
])
def test_what_an_unsloth_release_returns_is_read_from_its_backward(src, grads, inplace):
    got = field._unsloth_backward("    def backward(ctx, dY):\n" + src)
    assert got == {"grads": grads, "inplace": inplace}
    cand = field.unsloth_rms_layernorm(**got)
    assert cand.grads == grads and cand.inplace is inplace


def test_field_check_plans_one_run_per_version_and_its_limits_fit_the_call(tmp_path):
    src = tmp_path / "src"
    for ver in ("2.4.3", "2.8.3"):
        (src / f"fa-{ver}" / "flash_attn" / "ops" / "triton").mkdir(parents=True)
        (src / f"fa-{ver}" / "flash_attn" / "ops" / "triton" / "layer_norm.py").write_text("")
    for ver in ("2024.8", "2026.10.9"):
        (src / f"unsloth-{ver}" / "unsloth" / "kernels").mkdir(parents=True)
        (src / f"unsloth-{ver}" / "unsloth" / "kernels" / "rms_layernorm.py").write_text("")
    (src / "unsloth-broken").mkdir()  # no kernels file: no run
    out = subprocess.run(["bash", str(ROOT / "scripts" / "field-check.sh"), str(tmp_path / "out"), "7"],
                         env={**os.environ, "DRY": "1", "FIELD_SRC": str(src), "FIELD_PKGS": "/pkgs"},
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    runs = [line for line in out.stdout.splitlines() if " normgate run " in line]
    names = [line.rsplit("/", 1)[1].removesuffix(".jsonl") for line in runs]
    assert names == ["flash-attn-2.4.3", "flash-attn-2.8.3", "unsloth-2024.8", "unsloth-2026.10.9", "liger-fn",
                     "transformers"]
    assert runs[0].startswith("PYTHONPATH=/pkgs/fa-2.4.3") and "--kernels 'flash_attn_*'" in runs[0]
    assert runs[3].startswith("PYTHONPATH=/pkgs/unsloth-2026.10.9") and "--kernels 'unsloth_*'" in runs[3]
    assert all("--examples 7" in r and "--workers 16" in r for r in runs)
    limits = [int(r.split("timeout -s TERM ")[1].split()[0]) for r in runs]
    assert sum(limits) < 7 * 60, limits
