"""What a process imports on its way up is part of how long `querylog serve` and its projector child take to start."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["querylog.service.app", "querylog.projector_process", "querylog.cli"])
def test_starting_imports_no_pandas(module: str) -> None:
    # pyarrow imports pandas (0.3 s) the first time it makes an Arrow value: one made at import time costs every
    # start of the API, the projector child and each command, which need no pandas until they read or write.
    probe = f"import sys, {module}; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
