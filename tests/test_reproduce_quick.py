"""CI's quick reproduce: a change that moves a published number beyond its tolerance fails here.

``benchmarks/reproduce.py --quick`` re-makes the stages that have a quick variant (the evaluation
at guidance 7.5 on 60 requests, and the inference speed ratios, measured side by side in one
process so that the other test lane running beside it moves both arms alike) into a scratch
folder and compares every number they publish with the committed one, at the quick run's wider
ratio tolerance and the proportions' binomial interval for the smaller n. ``make test`` runs this
file in its second lane, beside the main one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import reproduce  # noqa: E402


def test_the_quick_reproduce_re_makes_every_quick_number_within_tolerance(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--quick", "--fresh", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    report = json.loads((tmp_path / "drift.json").read_text())
    assert report["failed_stages"] == [], done.stdout[-3000:] + done.stderr[-3000:]
    drifted = [f"{r['where']} {r['file']} {r['pointer']}: committed {r['committed']}, fresh {r['fresh']} "
               f"({r['tolerance']})" for r in report["rows"] if r["ok"] is False]
    assert drifted == [], "published numbers drifted:\n" + "\n".join(drifted)
    quick_files = {f for s in reproduce.STAGES if s.quick for f in s.files}
    judged = {r["file"] for r in report["rows"] if r["ok"] is not None}
    assert judged == quick_files, f"quick stages whose numbers were not judged: {sorted(quick_files - judged)}"
    assert done.returncode == 0, done.stdout[-3000:]
