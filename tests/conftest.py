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
