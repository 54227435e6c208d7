"""The README's numpyro and distrax example runs as printed: calibrated, inverted by NUTS."""

import re
import subprocess
import sys

import pytest
from test_readme import _section_code

pytest.importorskip("numpyro")
pytest.importorskip("distrax")


def test_use_it_with_numpyro_or_distrax_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_section_code("Use it with numpyro or distrax"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # 1000 held-out points: coverage sd about 0.016 (50%) and 0.0095 (90%), plus fitting error
    coverage = dict(re.findall(r"'(0\.[59])': ([0-9.]+)", out))
    assert abs(float(coverage["0.5"]) - 0.5) < 0.08 and abs(float(coverage["0.9"]) - 0.9) < 0.05
    assert float(re.search(r"held-out CRPS: ([0-9.]+)", out).group(1)) < 0.05  # noise sd 0.05
    assert abs(float(re.search(r"median y at x = 0.5: (-?[0-9.]+)", out).group(1)) - 0.25) < 0.05
    assert float(re.search(r"posterior share with \|x\| near 0.5: ([0-9.]+)", out).group(1)) > 0.8
    assert "distrax agrees: True" in out
