"""`mentor bench paper` end to end at the smallest knobs: every stage runs and the report has the tables."""

import json

from mentor.cli import main

TINY = ["--student-sft-steps", "3", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2",
        "--eval-every", "1", "--eval-size", "4", "--chat-sft-steps", "3", "--midtrain-steps", "2",
        "--self-distill-steps", "1", "--people", "2", "--one-prompt-steps", "1", "--one-prompt-samples", "4"]


def test_bench_paper_quick_writes_the_three_tables(tmp_path):
    out = tmp_path / "paper"
    assert main(["bench", "paper", "--quick", "--quiet", "--out", str(out), *TINY]) == 0
    report = (out / "results.md").read_text()
    for title in ("Experiment A", "two ratios", "Experiment B", "Experiment C"):
        assert title in report
    assert (out / "math_accuracy.png").stat().st_size > 0
    result = json.loads((out / "results.json").read_text())
    assert set(result["A"]["curves"]) == {"sft", "rl", "opd", "opd+reward"}
    # SFT's first point already carries the teacher's sampling cost; the on-policy methods start at 0
    assert result["A"]["curves"]["sft"][0]["teacher_flops"] > 0 and result["A"]["curves"]["rl"][0]["flops"] == 0
    assert len(result["B"]["rows"]) == 4
    assert 0 <= result["C"]["after"] <= 1
