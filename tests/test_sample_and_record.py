"""The sampler's own draw (inverse CDF inside a logits processor) samples the tempered, warped softmax."""

import math

import torch

from mentor.sample.hf import SampleAndRecord


def test_draws_follow_the_tempered_distribution_and_record_its_logprobs():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0])
    rows = 40_000
    for temperature, top_k in ((1.0, 0), (0.7, 0), (1.0, 2)):
        recorder = SampleAndRecord(temperature, top_k=top_k)
        onehot = recorder(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone())
        tokens = onehot.argmax(-1)
        assert (onehot.max(-1).values == math.inf).all() and torch.isposinf(onehot).sum() == rows
        expected = logits / temperature
        if top_k:
            expected = torch.where(expected >= expected.topk(top_k).values[-1], expected, -math.inf)
        probs = expected.softmax(-1)
        frequencies = torch.bincount(tokens, minlength=5).float() / rows
        assert torch.allclose(frequencies, probs, atol=0.01), (temperature, top_k, frequencies, probs)
        assert torch.allclose(recorder.logprobs[0], probs.log()[tokens], atol=1e-6)
