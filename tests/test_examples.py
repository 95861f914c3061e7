"""The examples run as a user runs them: a fresh Python process from the repository root."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_simulates_resamples_labels_and_summarises(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"released [\d,]+ rows to .*quickstart-release", out)
    assert "sampled 20,000 more rows for free" in out
    labels = re.search(r"student's labels for 5 rows: \[(.*)\]", out).group(1)
    assert len(re.findall(r"'(<=50K|>50K)'", labels)) == 5
    eps, delta = map(float, re.search(r"\(([\d.]+), ([\d.e+-]+)\)-DP per record", out).groups())
    assert 0 < eps <= 1.0 and 0 < delta < 1e-5
    assert (tmp_path / "quickstart-release" / "ledger.jsonl").is_file()
    assert "Traceback" not in done.stderr
