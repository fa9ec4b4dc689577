"""Full-distribution reverse KL (and its top-k approximation), chunked, against the naive computation."""

import pytest
import torch

from mentor.models.loading import load_model
from mentor.update.divergence import naive_reverse_kl, reverse_kl


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return load_model(tiny_dirs["student"]), load_model(tiny_dirs["teacher"])


def _batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 20, (3, 11), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0  # right padding
    positions = torch.zeros_like(input_ids, dtype=torch.bool)
    positions[:, 4:] = True  # e.g. the completion tokens
    return input_ids, attention_mask, positions


@pytest.mark.parametrize("chunk_size", [4, None])
def test_chunked_reverse_kl_and_its_gradient_match_the_naive_computation(models, chunk_size):
    student, teacher = models
    input_ids, attention_mask, positions = _batch()
    chunked = reverse_kl(student, teacher, input_ids, attention_mask, positions=positions, temperature=0.8,
                         chunk_size=chunk_size)
    naive = naive_reverse_kl(student, teacher, input_ids, attention_mask, temperature=0.8)
    where = positions & attention_mask.bool()
    assert torch.allclose(chunked[where], naive[where], atol=1e-5)
    assert (chunked[~where] == 0).all() and (chunked[where] > 0).all()

    grads = []
    for kl in (chunked, naive):
        student.zero_grad()
        (kl * where).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    assert all(p.grad is None for p in teacher.parameters())


def test_top_k_is_a_lower_bound_that_becomes_exact(models):
    student, teacher = models
    input_ids, attention_mask, positions = _batch()
    where = positions & attention_mask.bool()
    with torch.no_grad():
        full = reverse_kl(student, teacher, input_ids, attention_mask, positions=positions)
        vocab = student.get_output_embeddings().weight.shape[0]
        everything = reverse_kl(student, teacher, input_ids, attention_mask, positions=positions, top_k=vocab)
        previous = torch.zeros_like(full)
        for k in (1, 4, 16):
            approx = reverse_kl(student, teacher, input_ids, attention_mask, positions=positions, top_k=k)
            assert (approx[where] >= -1e-6).all() and (approx[where] <= full[where] + 1e-5).all()
            assert (approx[where] >= previous[where] - 1e-5).all()  # finer buckets lose less
            previous = approx
    assert torch.allclose(everything, full, atol=1e-6)
