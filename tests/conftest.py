import os
import subprocess
import sys
from pathlib import Path

import pytest

# The CPU runs Triton kernels only under the interpreter; it must be on before they are imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

TESTS = Path(__file__).parent
INCIDENTS = TESTS / "incidents"


@pytest.fixture(scope="session", autouse=True)
def _normgate_process():
    from normgate.runner import process_setup

    process_setup("cpu")


def normgate_cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run the installed command line in a fresh process, as a user would."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, "-m", "normgate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def compiled_for_hopper(script: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh process with the interpreter off, so that Triton's own compiler
    builds what it compiles (for sm_90: no GPU needed); skips where Triton has no CUDA backend."""
    import triton.backends

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("Triton's CUDA backend is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
