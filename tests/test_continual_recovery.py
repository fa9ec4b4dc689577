"""Experiment B v4 (``experiments/continual/recovery.py``): self-distillation from a mid-trained start with
checkpoints evaluated along the way; end to end on a tiny Llama at the smallest knobs, a rerun skipping every
finished stage (the real model's run is ``python -m experiments.continual.recovery``, about 40 minutes)."""

import json
from pathlib import Path

import pytest
from conftest import make_model_dir

from experiments.continual.recovery import BASE, FULL, START, checkpoints, run
from mentor.errors import MentorError

IFEVAL_SAMPLE = Path(__file__).parent / "data" / "ifeval_sample.jsonl"


def test_the_full_budget_is_60_steps_evaluated_at_20_40_60():
    assert FULL.self_distill_steps == 60 and FULL.distill_lr == 1e-4
    assert checkpoints(FULL) == (20, 40, 60)


def test_a_missing_start_is_one_line(tmp_path):
    with pytest.raises(MentorError, match="run v3 first"):
        run(tmp_path / "out", tmp_path / "nowhere")


def test_recovery_end_to_end_on_a_tiny_llama_and_a_rerun_skips_every_stage(tmp_path):
    base = make_model_dir(tmp_path / "base", arch="llama", hidden=32, layers=2, heads=4, seed=3, max_positions=512)
    start = make_model_dir(tmp_path / "start", arch="llama", hidden=32, layers=2, heads=4, seed=4, max_positions=512)
    knobs = dict(
        people=2,
        ifeval_prompts=2,
        ifeval_tokens=6,
        qa_tokens=4,
        self_distill_steps=3,
        distill_prompts=2,
        group_size=2,
        distill_tokens=6,
    )
    out = tmp_path / "v4"
    result = run(out, Path(start), quick=True, model=base, ifeval=str(IFEVAL_SAMPLE), **knobs)
    steps = [f"+ self-distillation, {s} steps" for s in (1, 2, 3)]
    assert list(result["rows"]) == [BASE, START, *steps]
    assert len(result["changes"]) == 6 and {c["against"] for c in result["changes"]} == {BASE, START}
    # the base and the start are other models than v3's, so their outcomes need not match (a check, not a claim)
    assert set(result["same_as_v3"]) == {BASE, START}
    # the checkpoints are three different models: the student moved between them
    opd = [json.loads(line) for line in (out / "opd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in opd if "reverse_kl" in r] == [1, 2, 3]
    for name in ("results.md", "results.json", "recovery.png"):
        assert (out / name).stat().st_size > 0
    before = json.loads((out / "state.json").read_text())
    run(out, Path(start), quick=True, model=base, ifeval=str(IFEVAL_SAMPLE), **knobs)
    assert json.loads((out / "state.json").read_text())["timings"] == before["timings"]  # nothing ran again
