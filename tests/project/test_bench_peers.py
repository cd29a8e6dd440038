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


def test_ratios_are_to_restic_where_rustic_is_absent() -> None:
    """The anchor column is rustic's; in a run without rustic (not installed, or it failed) it
    is restic's, named so in the header, rather than empty."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("repo_peers", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    peers = importlib.util.module_from_spec(spec)
    sys.modules["repo_peers"] = peers  # dataclasses look their module up while being made
    spec.loader.exec_module(peers)

    def row(tool: str, backup: float, restore: float) -> object:
        return peers.Row(
            "media", "tmpfs", tool, 10**9,
            backup=peers.Measure(backup, 1.0, 10.0),
            restore=peers.Measure(restore, 1.0, 10.0),
        )  # fmt: skip

    report = peers.Report("now", "here")
    report.rows = [row("cp -a", 1.0, 1.0), row("e2ebackup", 2.0, 4.0), row("restic", 4.0, 6.0)]
    table = peers.render(report)
    assert "| tool | backup | x restic | x cp |" in table
    (mine,) = [line for line in table.splitlines() if line.startswith("| e2ebackup")]
    cells = [c.strip() for c in mine.strip("|").split("|")]
    assert cells[2] == "2.00"  # restic 4 s / ours 2 s
    assert cells[10] == "1.50"  # restore: 6 s / 4 s
    report.rows.append(row("rustic", 3.0, 3.0))
    table = peers.render(report)
    assert "| tool | backup | x rustic | x cp |" in table
