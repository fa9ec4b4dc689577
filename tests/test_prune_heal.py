"""Experiment A2 "prune and heal" (``experiments/prune_heal``): its measurements, its fits, and every stage end to
end at ``--quick`` sizes on a tiny 18-layer Llama standing in for SmolLM2-135M-Instruct (the real model's
``--quick`` run takes minutes: ``python -m experiments.prune_heal.run --quick``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from real_assets import SHARED_REAL

from experiments.prune_heal.report import fit_line, sft_flops_to_reach
from experiments.prune_heal.run import FULL, QUICK, main, prompt_splits, rouge_l

IFEVAL = SHARED_REAL / "data" / "ifeval" / "input_data.jsonl"


def tiny_llama(path: Path) -> str:
    """18 layers (the pruned ones are 3 and 13-17), a context that holds the chat prompts and their answers."""
    from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config

    tokenizer = build_char_tokenizer()
    config = tiny_config("llama", len(tokenizer), 32, 18, 4, tokenizer=tokenizer, max_positions=256)
    save_tiny(build_tiny_model(config, seed=3), tokenizer, path)
    return str(path)


def test_rouge_l_is_the_lcs_f1_over_words():
    assert rouge_l("The cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c d", "a x c y") == pytest.approx(0.5)  # LCS "a c": precision 2/4, recall 2/4
    assert rouge_l("", "anything") == 0.0 and rouge_l("", "") == 1.0


def test_prompt_splits_hold_out_whole_topics():
    for scale in (QUICK, FULL):
        splits = prompt_splits(scale)
        held = splits["held_out_topics"]
        assert len(splits["evaluation"]) == scale.eval_prompts
        assert len(splits["sft"]) == 4 * scale.n0 and len(splits["opd"]) == scale.n0
        assert not set(splits["sft"]) & set(splits["opd"])
        for prompt in splits["sft"] + splits["opd"]:
            assert not any(topic in prompt for topic in held)
        assert all(any(topic in p for topic in held) for p in splits["evaluation"])


def test_sft_fit_meets_a_target_only_in_its_direction_and_range():
    slope, intercept = fit_line([1e12, 2e12, 4e12], [0.1, 0.2, 0.3])
    assert slope == pytest.approx(0.1 / 0.30103, rel=1e-6)
    needed = sft_flops_to_reach(0.4, slope, intercept, higher_better=True, top=4e12)
    assert needed == pytest.approx(8e12, rel=1e-6)  # one more doubling
    assert sft_flops_to_reach(0.9, slope, intercept, True, 4e12) is None  # beyond 4x the fitted range
    assert sft_flops_to_reach(0.4, slope, intercept, higher_better=False, top=4e12) is None  # wrong direction


def test_prune_heal_end_to_end_at_quick_sizes(tmp_path):
    model = tiny_llama(tmp_path / "tiny_llama")
    out = tmp_path / "prune_heal"
    main(["--quick", "--out", str(out), "--model", model, "--ifeval", str(IFEVAL)])
    result = json.loads((out / "results.json").read_text())
    assert set(result["rows"]) == {
        "teacher",
        "start",
        "sft_n0",
        "sft_2n0",
        "sft_4n0",
        "forward_kl_n0",
        "opd_sampled",
        "opd_top_k",
        "opd_one_prompt",
    }
    assert result["rows"]["teacher"]["agreement"]["value"] == 1.0  # the teacher's answers are the reference
    start = json.loads((out / "start" / "mentor_prune.json").read_text())
    assert start["dropped"] == [3, 13, 14, 15, 16, 17] and start["layers_after"] == 12
    costs = result["costs"]
    assert costs["sft_n0"]["student"] < costs["sft_2n0"]["student"] < costs["sft_4n0"]["student"]
    assert costs["opd_sampled"]["own"]["teacher"] > 0 and costs["forward_kl_n0"]["teacher"] > 0
    assert set(result["fits"]["agreement"]) == {"student", "student+teacher"}
    assert len(result["paired"]) == 8
    report = (out / "results.md").read_text()
    assert "FLOPs SFT needs" in report and "Paired differences" in report
    assert (out / "prune_heal.png").stat().st_size > 0
    # run again: every stage is found finished, nothing retrains
    mtime = (out / "sft" / "final").stat().st_mtime_ns
    main(["--quick", "--out", str(out), "--model", model, "--ifeval", str(IFEVAL)])
    assert (out / "sft" / "final").stat().st_mtime_ns == mtime
    shutil.rmtree(out)  # checkpoints with optimizer state: not left in pytest's kept temporary directories
