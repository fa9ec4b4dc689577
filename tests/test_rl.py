"""RL: group-baseline advantages (and GRPO's std) by hand, constant groups dropped, KL to a reference,
PPO clipping in the loss, and `mentor rl` end to end."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mentor.algorithms.rl import ReinforcementLearning, constant_reward_groups
from mentor.cli import main
from mentor.data.prompts import EncodedExample
from mentor.sample.hf import HFSampler
from mentor.score.local import LocalTeacher
from mentor.update.losses import importance_sampling_loss


def test_constant_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert constant_reward_groups(rewards, torch.tensor([0, 0, 1, 1, 2, 2])).tolist() == [
        True,
        True,
        False,
        False,
        True,
        True,
    ]


@pytest.fixture()
def student(tiny_dirs):
    return AutoModelForCausalLM.from_pretrained(tiny_dirs["student"]), AutoTokenizer.from_pretrained(
        tiny_dirs["student"]
    )


def _examples(tokenizer, prompts):
    return [EncodedExample(tokenizer(p)["input_ids"], None, p, p) for p in prompts]


def length_grader(completion, reference):
    return float(len(completion) % 3)  # deterministic given the sample, varied across samples


@pytest.mark.parametrize("normalize_std", [False, True])
def test_advantages_are_group_centred_rewards(student, normalize_std):
    model, tokenizer = student
    torch.manual_seed(0)
    rl = ReinforcementLearning(
        HFSampler(model, tokenizer, max_new_tokens=6),
        tokenizer,
        length_grader,
        group_size=4,
        temperature=1.0,
        normalize_std=normalize_std,
        drop_constant_groups=False,
    )
    batch, metrics = rl.collect(_examples(tokenizer, ["12+3=", "4*5-6="]))
    assert metrics["reward"] == pytest.approx(float(batch.rewards.mean()))
    for g in range(2):
        r = batch.rewards[4 * g : 4 * g + 4]
        want = r - r.mean()
        if normalize_std:
            want = want / (r.std() + 1e-6)
        for i in range(4):
            row = 4 * g + i
            mask = batch.loss_mask[row] > 0
            assert torch.allclose(batch.advantages[row][mask], want[i].expand(int(mask.sum())), atol=1e-6)
            assert (batch.advantages[row][~mask] == 0).all()


def test_constant_groups_dropped_and_counted(student):
    model, tokenizer = student

    def grader(c, r):  # group 0 constant, group 1 varied
        return 1.0 if r == "1+1=" else float(len(c) % 2)

    torch.manual_seed(3)
    rl = ReinforcementLearning(
        HFSampler(model, tokenizer, max_new_tokens=6), tokenizer, grader, group_size=8, temperature=1.0
    )
    batch, metrics = rl.collect(_examples(tokenizer, ["1+1=", "2+2="]))
    assert metrics["constant_reward_groups"] == 1
    assert len(batch) == 8 and (batch.group_ids == 1).all()
    everything_constant = ReinforcementLearning(rl.sampler, tokenizer, lambda c, r: 1.0, group_size=2, temperature=1.0)
    batch, metrics = everything_constant.collect(_examples(tokenizer, ["1+1=", "2+2="]))
    assert metrics["constant_reward_groups"] == 2 and len(batch) == 4 and not batch.advantages.any()


def test_kl_penalty_to_reference(student):
    model, tokenizer = student
    reference = LocalTeacher(AutoModelForCausalLM.from_pretrained(model.config._name_or_path), tokenizer.pad_token_id)
    torch.manual_seed(1)
    rl = ReinforcementLearning(
        HFSampler(model, tokenizer, max_new_tokens=6),
        tokenizer,
        length_grader,
        group_size=4,
        temperature=1.0,
        kl_coef=0.5,
        reference=reference,
        drop_constant_groups=False,
    )
    batch, metrics = rl.collect(_examples(tokenizer, ["12+3="]))
    centred = (batch.rewards - batch.rewards.mean()).unsqueeze(1) * batch.loss_mask
    kl = (batch.sampler_logprobs - batch.teacher_logprobs) * batch.loss_mask
    assert torch.allclose(batch.advantages, centred - 0.5 * kl, atol=1e-6)
    # the reference is the same weights: sampler and reference log-probs agree, so the KL is ~0
    assert abs(metrics["kl_to_reference"]) < 1e-4
    assert metrics["reference_tokens"] == float(batch.attention_mask.sum())


def test_ppo_clip_by_hand():
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    sampler = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    plain, _ = importance_sampling_loss(logprobs, sampler, adv, mask, num_tokens=2)
    assert plain.item() == pytest.approx(-(1.5 * 1 + 0.5 * -1) / 2)
    clipped, _ = importance_sampling_loss(logprobs, sampler, adv, mask, num_tokens=2, clip_ratio=0.2)
    # token 0: min(1.5, 1.2) * 1 = 1.2; token 1: min(0.5 * -1, 0.8 * -1) = -0.8
    assert clipped.item() == pytest.approx(-(1.2 - 0.8) / 2)


def test_mentor_rl_cli(tiny_dirs, tmp_path):
    out = tmp_path / "rl"
    code = main(
        [
            "rl",
            "--model",
            tiny_dirs["student"],
            "--task",
            "arithmetic",
            "--output-dir",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--group-size",
            "4",
            "--max-new-tokens",
            "8",
            "--eval-size",
            "4",
            "--normalize-std",
            "--loss",
            "ppo",
            "--clip-ratio",
            "0.2",
            "--kl-coef",
            "0.1",
            "--quiet",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward" in r]
    assert len(steps) == 2 and "constant_reward_groups" in steps[0] and steps[-1]["flops_reference_score"] > 0
    assert (out / "final" / "config.json").exists()
