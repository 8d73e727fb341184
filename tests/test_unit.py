"""Runs each C unit-test binary (cmocka) built from tests/unit/test_*.c."""
import glob
import os
import subprocess

import pytest

from conftest import BUILD, ROOT

SOURCES = sorted(glob.glob(os.path.join(ROOT, "tests", "unit", "test_*.c")))


@pytest.mark.parametrize("name", [os.path.basename(s)[:-2] for s in SOURCES])
def test_unit(name, tmp_path):
    exe = os.path.join(BUILD, "tests", name)
    assert os.path.exists(exe), "%s not built (make unit)" % exe
    env = dict(os.environ, TMPDIR=str(tmp_path))
    r = subprocess.run([exe], cwd=ROOT, env=env, capture_output=True,
                       timeout=600)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode(
        "utf-8", "replace")
    assert r.returncode == 0, out
    assert "[  PASSED  ]" in out, out
    assert "[  FAILED  ]" not in out, out
