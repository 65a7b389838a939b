"""`dreamrelation benchmark toy`: where its report goes."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from dreamrelation.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_report_goes_beside_the_results_unless_asked(tmp_path: Path) -> None:
    committed = ROOT / "docs" / "toy_benchmark.md"
    before = committed.read_bytes()
    output = tmp_path / "bench"
    output.mkdir()
    shutil.copy(ROOT / "docs" / "toy_benchmark_stage3_results.json", output / "results.json")
    args = ["benchmark", "toy", "--relation", "walking_towards,shaking_hands", "--seeds", "0,1,2",
            "--methods", "base,direct_lora,dreamrelation", "--output", str(output),
            "--report-only"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (output / "toy_benchmark.md").read_text()
    assert "## Averaged over walking_towards, shaking_hands (3 complete seeds)" in report
    assert committed.read_bytes() == before  # a run never overwrites the committed report by default
    elsewhere = tmp_path / "report.md"
    assert CliRunner().invoke(app, [*args, "--docs", str(elsewhere)]).exit_code == 0
    assert elsewhere.read_text().startswith("# Toy-world benchmark: 2 relations")
