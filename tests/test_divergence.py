"""Full-distribution reverse KL (and its top-k approximation) and the generalized JSD, chunked, against the naive
computation."""

import pytest
import torch

from mentor.models.loading import load_model
from mentor.update.divergence import (
    GeneralizedJSD,
    generalized_jsd,
    naive_generalized_jsd,
    naive_reverse_kl,
    reverse_kl,
)


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return load_model(tiny_dirs["student"]), load_model(tiny_dirs["teacher"])


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
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
    chunked = reverse_kl(
        student, teacher, input_ids, attention_mask, positions=positions, temperature=0.8, chunk_size=chunk_size
    )
    naive = naive_reverse_kl(student, teacher, input_ids, attention_mask, temperature=0.8)
    where = positions & attention_mask.bool()
    assert torch.allclose(chunked[where], naive[where], atol=1e-5)
    assert (chunked[~where] == 0).all() and (chunked[where] > 0).all()

    grads = _student_grads(student, teacher, (chunked, naive), where)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _student_grads(student, teacher, values, where):
    """The student's flattened gradient of each per-position value summed over ``where``; the teacher gets none."""
    grads = []
    for value in values:
        student.zero_grad()
        (value * where).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters()]))
    assert all(p.grad is None for p in teacher.parameters())
    return grads


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
    from mentor.update.divergence import FullReverseKL
    from mentor.update.logprobs import PolicyLogprobs, token_logprobs

    student, teacher = models
    input_ids, attention_mask, positions = _batch()
    where = positions & attention_mask.bool()
    logprobs, entropy, kl = PolicyLogprobs(student)(
        input_ids, attention_mask, positions=positions, hidden_term=FullReverseKL(teacher), with_entropy=True
    )
    alone, _ = token_logprobs(student, input_ids, attention_mask, positions=positions)
    assert torch.equal(logprobs, alone)
    naive = naive_reverse_kl(student, teacher, input_ids, attention_mask)
    assert torch.allclose(kl[where], naive[where], atol=1e-5) and (kl[~where] == 0).all()
    _, _, top = PolicyLogprobs(student)(
        input_ids, attention_mask, positions=positions, hidden_term=FullReverseKL(teacher, 4)
    )
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
    config = DistillConfig(
        student=tiny_dirs["student"],
        teacher=tiny_dirs["teacher"],
        task="arithmetic",
        output_dir=str(tmp_path / "run"),
        steps=12,
        batch_size=3,
        group_size=2,
        max_new_tokens=8,
        learning_rate=3e-3,
        eval_size=4,
        quiet=True,
        seed=0,
        divergence=divergence,
        kl_top_k=8,
    )
    _, history = run_distill(config, examples=fixed)
    kls = [r["full_reverse_kl"] for r in history if "full_reverse_kl" in r]
    assert len(kls) == 12
    # full: no separate scoring pass ran; top_k scored the teacher's top-k (and the sampled token) before the update
    assert ("reverse_kl" in history[-1]) == (divergence == "top_k")
    assert sum(kls[-3:]) / 3 < 0.7 * sum(kls[:3]) / 3, kls


def test_the_full_reverse_kl_needs_one_in_process_teacher(tiny_dirs, tmp_path):
    from mentor.cli import main

    for teacher in ("http://127.0.0.1:9/v1", f"a={tiny_dirs['teacher']},b={tiny_dirs['teacher']}"):
        code = main(
            [
                "distill",
                "--student",
                tiny_dirs["student"],
                "--teacher",
                teacher,
                "--task",
                "arithmetic",
                "--divergence",
                "full",
                "--output-dir",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        assert code == 2 and not (tmp_path / "x").exists()


# --- the generalized JSD (TRL's GKD / DistillationTrainer definition) ---


def _jsd_batch():
    input_ids, attention_mask, positions = _batch(seed=1)
    positions[:, 3] = True
    return input_ids, attention_mask, positions


def _by_hand(student, teacher, input_ids, attention_mask, beta, temperature):
    """Straight from the definition, in float64 probabilities (no logsumexp, no kl_div)."""
    with torch.no_grad():
        q = torch.softmax(student(input_ids=input_ids, attention_mask=attention_mask).logits.double() / temperature, -1)
        p = torch.softmax(teacher(input_ids=input_ids, attention_mask=attention_mask).logits.double() / temperature, -1)
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)  # noqa: E731
    if beta == 0:
        value = kl(p, q)
    elif beta == 1:
        value = kl(q, p)
    else:
        m = beta * p + (1 - beta) * q
        value = beta * kl(p, m) + (1 - beta) * kl(q, m)
    out = torch.zeros(input_ids.shape, dtype=torch.float64)
    out[:, 1:] = value[:, :-1] * attention_mask[:, 1:]
    return out


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("chunk_size", [4, None])
def test_chunked_jsd_and_its_gradient_match_the_naive_computation(models, beta, chunk_size):
    student, teacher = models
    input_ids, attention_mask, positions = _jsd_batch()
    where = positions & attention_mask.bool()
    chunked = generalized_jsd(
        student,
        teacher,
        input_ids,
        attention_mask,
        beta=beta,
        positions=positions,
        temperature=0.8,
        chunk_size=chunk_size,
    )
    naive = naive_generalized_jsd(student, teacher, input_ids, attention_mask, beta, temperature=0.8)
    assert torch.allclose(chunked[where], naive[where], atol=1e-5)
    hand = _by_hand(student, teacher, input_ids, attention_mask, beta, 0.8)
    assert torch.allclose(chunked[where].double(), hand[where], atol=1e-5)
    assert (chunked[~where] == 0).all() and (chunked[where] > 0).all()

    grads = _student_grads(student, teacher, (chunked, naive), where)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-5)


def test_the_endpoints_are_the_forward_and_reverse_kl(models):
    student, teacher = models
    input_ids, attention_mask, positions = _jsd_batch()
    where = positions & attention_mask.bool()
    with torch.no_grad():
        reverse = generalized_jsd(student, teacher, input_ids, attention_mask, beta=1.0, positions=positions)
        assert torch.allclose(
            reverse[where], naive_reverse_kl(student, teacher, input_ids, attention_mask)[where], atol=1e-5
        )
        forward = generalized_jsd(student, teacher, input_ids, attention_mask, beta=0.0, positions=positions)
        swapped = naive_reverse_kl(teacher, student, input_ids, attention_mask)  # KL(teacher || student)
        assert torch.allclose(forward[where], swapped[where], atol=1e-5)
        half = generalized_jsd(student, teacher, input_ids, attention_mask, beta=0.5, positions=positions)
        assert (half[where] <= torch.log(torch.tensor(2.0)) + 1e-6).all()  # the JSD is bounded by log 2
    with pytest.raises(ValueError):
        GeneralizedJSD(teacher, beta=1.5)


def test_opd_selects_the_jsd_from_python_and_logs_it(models, tiny_dirs):
    from types import SimpleNamespace

    from mentor.algorithms.opd import DIVERGENCES, OnPolicyDistillation
    from mentor.errors import MentorError
    from mentor.score.local import LocalTeacher
    from mentor.update.logprobs import PolicyLogprobs

    student, teacher = models
    assert "jsd" in DIVERGENCES  # --divergence jsd on the command line too (tests/test_backends.py)
    algorithm = OnPolicyDistillation(
        None,
        LocalTeacher(teacher, pad_id=0),
        None,
        group_size=2,
        temperature=1.0,
        divergence="jsd",
        jsd_beta=0.3,
        kl_coef=2.0,
    )
    options = algorithm.forward_options()
    assert isinstance(options["hidden_term"], GeneralizedJSD) and options["hidden_term"].beta == 0.3
    input_ids, attention_mask, positions = _jsd_batch()
    where = positions & attention_mask.bool()
    output = PolicyLogprobs(student)(input_ids, attention_mask, positions=positions, **options)
    naive = naive_generalized_jsd(student, teacher, input_ids, attention_mask, 0.3)
    assert torch.allclose(output.term[where], naive[where], atol=1e-5)
    micro = SimpleNamespace(
        sampler_logprobs=output.logprobs.detach(), advantages=torch.zeros_like(output.logprobs), loss_mask=where.float()
    )
    num_tokens = int(where.sum())
    loss, metrics = algorithm.loss(output, micro, num_tokens)
    expected = float((naive.detach() * where).sum()) / num_tokens
    assert metrics["generalized_jsd"] == pytest.approx(expected, abs=1e-5) and "full_reverse_kl" not in metrics
    assert float(loss.detach()) == pytest.approx(2.0 * expected, abs=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    student.zero_grad()
    for bad in ({"divergence": "jsd", "jsd_beta": -0.1}, {"divergence": "nope"}):
        with pytest.raises(MentorError):
            OnPolicyDistillation(None, LocalTeacher(teacher, pad_id=0), None, group_size=2, temperature=1.0, **bad)
