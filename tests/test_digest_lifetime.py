"""The repeat check's digest of a tensor that is copied first (a GPU tensor, a strided one)."""

import subprocess
import sys


def test_digest_of_a_copied_tensor_reads_live_memory():
    # a strided 64 MB tensor: .contiguous() copies it into memory that is unmapped when freed, so
    # hashing a view of a freed copy dies of SIGSEGV (as GPU workers did on large repeat cases)
    code = ("import torch\nfrom normgate import memory\n"
            "t = torch.randn(4096, 4097)[:, :4096]\n"
            "assert memory.digest({'y': t}) == memory.digest({'y': t.contiguous()})\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-1000:])
