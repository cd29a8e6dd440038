"""The peer benchmark (benches/repo_peers.py) runs end to end and prints its table.

Restricted to e2ebackup and ``cp -a`` so CI needs neither rustic nor restic; the script checks
every restore against the source (``--strict`` makes a wrong restore fail the run). No timing is
asserted: only that the table is there, with its ratio columns filled in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benches" / "repo_peers.py"


def test_quick_run_prints_the_table_with_ratios_to_the_copy(tmp_path: Path) -> None:
    raw = tmp_path / "peers.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--tools",
            "e2ebackup,cp",
            "--trees",
            "media,small",
            "--where",
            "disk",
            "--workdir",
            str(tmp_path / "work"),
            "--strict",
            "--json",
            str(raw),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "### media tree on disk" in out
    assert "### small tree on disk" in out
    assert "| tool | backup | x rustic | x cp |" in out
    e2e_rows = [line for line in out.splitlines() if line.startswith("| e2ebackup |")]
    assert len(e2e_rows) == 2
    for line in e2e_rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == ""  # no rustic in this run: its ratio column stays empty
        assert float(cells[3]) > 0  # speed ratio to cp -a
        assert float(cells[11]) > 0  # restore speed ratio to cp -a
    report = json.loads(raw.read_text())
    rows = [r for r in report["rows"] if r["tool"] == "e2ebackup"]
    assert all(r["stored"] > 0 and r["restore"]["rss_mib"] > 0 for r in rows)
    assert "rustic" not in report["versions"]
    # Nothing left behind in the scratch folder.
    assert list((tmp_path / "work" / "scratch").iterdir()) == []
