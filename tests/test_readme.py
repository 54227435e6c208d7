"""The README's library example runs exactly as printed and learns both branches."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under '{heading}'"
    return blocks[0]


def test_use_it_from_your_own_jax_code_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_section_code("Use it from your own JAX code"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shares = [float(v) for v in re.findall(r"share near [+-]0\.5: ([0-9.]+)", done.stdout)]
    nll = float(re.search(r"final NLL: (-?[0-9.]+)", done.stdout).group(1))
    assert len(shares) == 2 and all(share > 0.35 for share in shares), done.stdout
    # Two branches with noise 0.02: the optimum is log 2 - 0.5 log(2 pi e 0.02^2) ~ -1.80 nats.
    assert nll < -1.5, done.stdout
