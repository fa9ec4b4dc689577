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


def test_the_training_forward_returns_log_probs_and_the_full_kl_from_one_decoder_pass(models):
    from mentor.update.logprobs import PolicyLogprobs, token_logprobs

    student, teacher = models
    input_ids, attention_mask, positions = _batch()
    where = positions & attention_mask.bool()
    logprobs, entropy, kl = PolicyLogprobs(student)(input_ids, attention_mask, positions=positions,
                                                    kl_teacher=teacher, with_entropy=True)
    alone, _ = token_logprobs(student, input_ids, attention_mask, positions=positions)
    assert torch.equal(logprobs, alone)
    naive = naive_reverse_kl(student, teacher, input_ids, attention_mask)
    assert torch.allclose(kl[where], naive[where], atol=1e-5) and (kl[~where] == 0).all()
    _, _, top = PolicyLogprobs(student)(input_ids, attention_mask, positions=positions, kl_teacher=teacher,
                                        kl_top_k=4)
    assert (top[where] <= kl[where] + 1e-5).all()


@pytest.mark.parametrize("divergence", ["full", "top_k"])
def test_opd_on_the_full_reverse_kl_lowers_it(tiny_dirs, tmp_path, divergence):
    """OPD --divergence full|top_k: the teacher grades every vocabulary entry at every sampled position."""
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample
    from mentor.models.loading import load_tokenizer
    from mentor.recipes.distill import run_distill

    tokenizer = load_tokenizer(tiny_dirs["student"])
    fixed = [EncodedExample(tokenizer(p)["input_ids"], text=p) for p in ("12+34*5=", "7*8+9=", "45+6+7=")]
    config = DistillConfig(student=tiny_dirs["student"], teacher=tiny_dirs["teacher"], task="arithmetic",
                           output_dir=str(tmp_path / "run"), steps=12, batch_size=3, group_size=2,
                           max_new_tokens=8, learning_rate=3e-3, eval_size=4, quiet=True, seed=0,
                           divergence=divergence, kl_top_k=8)
    _, history = run_distill(config, examples=fixed)
    kls = [r["full_reverse_kl"] for r in history if "full_reverse_kl" in r]
    assert len(kls) == 12 and "reverse_kl" not in history[-1]  # no separate scoring pass ran
    assert sum(kls[-3:]) / 3 < 0.7 * sum(kls[:3]) / 3, kls


def test_the_full_reverse_kl_needs_one_in_process_teacher(tiny_dirs, tmp_path):
    from mentor.cli import main

    for teacher in ("http://127.0.0.1:9/v1", f"a={tiny_dirs['teacher']},b={tiny_dirs['teacher']}"):
        code = main(["distill", "--student", tiny_dirs["student"], "--teacher", teacher, "--task", "arithmetic",
                     "--divergence", "full", "--output-dir", str(tmp_path / "x"), "--quiet"])
        assert code == 2 and not (tmp_path / "x").exists()
