"""OPD's top_k divergence: the teacher's top-k plus a rest bucket, the same number in-process and from a server
(vLLM's prompt_logprobs=k, served by `mentor serve-teacher`)."""

import json
import math
import urllib.request

import pytest
import torch

from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.rollout import right_pad
from mentor.score.http import HTTPTeacher
from mentor.serve import TeacherServer
from mentor.update.divergence import (
    bucket_reverse_kl,
    naive_reverse_kl,
    reverse_kl,
    teacher_top_k,
    top_k_reverse_kl_from_hidden,
)
from mentor.update.logprobs import last_hidden_states
from tests.helpers import first_choice, refused_once

SEQUENCES = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11, 12, 13, 14, 15, 16, 17], [1, 4, 4, 4]]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return load_model(tiny_dirs["student"]), load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])


@pytest.fixture()
def server(models):
    _, teacher, tokenizer = models
    with TeacherServer(teacher, tokenizer, model_name="tiny-teacher", port=0) as running:
        yield running


def _padded(sequences=SEQUENCES, pad_id=0):
    input_ids, attention_mask = right_pad(sequences, pad_id)
    return input_ids, attention_mask, attention_mask.bool()


# --- the estimator ---------------------------------------------------------------------------------------------
def test_bucket_kl_is_the_kl_between_the_coarsened_distributions_by_hand():
    """KL over {teacher's top-k ids, rest} computed from its definition in float64 probabilities."""
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(6, 30, generator=g, dtype=torch.float64), -1)
    p = torch.softmax(torch.randn(6, 30, generator=g, dtype=torch.float64) * 2, -1)
    ids = p.topk(4, dim=-1).indices
    q_top, p_top = q.gather(-1, ids), p.gather(-1, ids)
    q_rest, p_rest = 1 - q_top.sum(-1), 1 - p_top.sum(-1)
    by_hand = (q_top * (q_top / p_top).log()).sum(-1) + q_rest * (q_rest / p_rest).log()
    ours = bucket_reverse_kl(q_top.log().float(), p_top.log().float())
    assert torch.allclose(ours.double(), by_hand, atol=1e-5)
    full = (q * (q / p).log()).sum(-1)
    assert (ours.double() <= full + 1e-6).all() and (ours >= -1e-6).all()


def test_the_in_process_reverse_kl_and_the_given_top_k_term_agree_with_gradients(models):
    """reverse_kl(top_k=k) buckets by the teacher's top-k; the term built from a given top-k (what a server
    returns) is the same number and the same student gradient; both bound the full KL and reach it at k=vocab."""
    student, teacher, _ = models
    input_ids, attention_mask, wanted = _padded()
    wanted[:, :2] = False
    top = teacher_top_k(teacher, input_ids, attention_mask, wanted, 6)
    in_process = reverse_kl(student, teacher, input_ids, attention_mask, positions=wanted, top_k=6)
    hidden = last_hidden_states(student, input_ids, attention_mask)
    given = top_k_reverse_kl_from_hidden(student, hidden, top.ids, top.logprobs, wanted, chunk_size=3)
    assert torch.allclose(in_process, given, atol=1e-6) and (given[~wanted] == 0).all()
    grads = []
    for value in (in_process, given):
        student.zero_grad()
        value.sum().backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters()]))
    student.zero_grad()
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    with torch.no_grad():
        full = naive_reverse_kl(student, teacher, input_ids, attention_mask)
        vocab = teacher.get_output_embeddings().weight.shape[0]
        every = teacher_top_k(teacher, input_ids, attention_mask, wanted, vocab)
        exact = top_k_reverse_kl_from_hidden(student, hidden.detach(), every.ids, every.logprobs, wanted)
    assert (given[wanted] <= full[wanted] + 1e-5).all() and (given[wanted] >= -1e-6).all()
    assert torch.allclose(exact[wanted], full[wanted], atol=1e-5)


def test_a_teacher_id_outside_the_students_vocabulary_is_one_line(models):
    student, teacher, _ = models
    input_ids, attention_mask, wanted = _padded()
    top = teacher_top_k(teacher, input_ids, attention_mask, wanted, 3)
    hidden = last_hidden_states(student, input_ids, attention_mask)
    with pytest.raises(MentorError, match="outside the student's 54-token vocabulary"):
        top_k_reverse_kl_from_hidden(student, hidden, top.ids + 100, top.logprobs, wanted)


# --- serve-teacher: vLLM's answer shape, and the client ------------------------------------------------------
def _post(server, body):
    request = urllib.request.Request(
        server.url + "/completions",
        json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_served_prompt_logprobs_have_vllms_shape_and_the_in_process_numbers(server, models):
    _, teacher, tokenizer = models
    k = 4
    answer = _post(
        server,
        {
            "model": "tiny-teacher",
            "prompt": SEQUENCES,
            "echo": True,
            "max_tokens": 1,
            "prompt_logprobs": k,
            "return_token_ids": True,
        },
    )
    input_ids, attention_mask, wanted = _padded(pad_id=tokenizer.pad_token_id)
    local = teacher_top_k(teacher, input_ids, attention_mask, wanted, k, with_ranks=True)
    for row, (choice, sequence) in enumerate(zip(answer["choices"], SEQUENCES)):
        entries = choice["prompt_logprobs"]
        assert entries[0] is None and len(entries) == len(sequence)
        for t in range(1, len(sequence)):
            entry, own = entries[t], str(sequence[t])
            assert next(iter(entry)) == own  # vLLM lists the prompt's own token first
            assert entry[own]["rank"] == int(local.token_ranks[row, t])
            assert entry[own]["logprob"] == pytest.approx(float(local.token_logprobs[row, t]), abs=1e-6)
            top = {key: value for key, value in entry.items() if value["rank"] <= k}
            assert len(entry) == (k if int(local.token_ranks[row, t]) <= k else k + 1)
            assert sorted(v["rank"] for v in top.values()) == list(range(1, k + 1))
            assert [int(key) for key in top] == local.ids[row, t].tolist() or own in top
            for key, value in top.items():
                assert value["decoded_token"] == tokenizer.convert_ids_to_tokens(int(key))
                assert value["logprob"] == pytest.approx(float(local.logprobs[row, t, value["rank"] - 1]), abs=1e-6)
    for bad in (-1, 1000, "3", 2.5):
        with pytest.raises(urllib.error.HTTPError) as info:
            _post(server, {"prompt": SEQUENCES[:1], "echo": True, "max_tokens": 1, "prompt_logprobs": bad})
        assert info.value.code == 400


def test_the_client_reads_the_top_k_exactly(server, models):
    _, teacher, tokenizer = models
    remote = HTTPTeacher(server.url, batch_size=3, max_concurrency=2).compute_top_k(SEQUENCES, 5)
    input_ids, attention_mask, wanted = _padded(pad_id=tokenizer.pad_token_id)
    local = teacher_top_k(teacher, input_ids, attention_mask, wanted, 5)
    for row, (answer, sequence) in enumerate(zip(remote, SEQUENCES)):
        n = len(sequence)
        assert answer.ids.shape == (n, 5) and answer.ids[0].eq(0).all()
        assert torch.equal(answer.ids, local.ids[row, :n])
        assert torch.allclose(answer.logprobs, local.logprobs[row, :n], atol=1e-6)
        assert torch.allclose(answer.token_logprobs, local.token_logprobs[row, :n], atol=1e-6)


def _entry(position, edit):
    """Edit the prompt_logprobs entry at ``position`` of the first choice."""
    return first_choice(lambda choice, sequence: edit(choice["prompt_logprobs"][position], sequence[position]))


def _drop_two_top_entries(entry, own):
    for key in [key for key in entry if key != str(own)][-2:]:
        entry.pop(key)


def _hide_the_own_tokens_rank(entry, own):  # k entries although the own token is not among the top k
    entry.clear()
    entry.update(
        {str(own): {"logprob": -5.0, "rank": 9}, "40": {"logprob": -0.5, "rank": 1}, "41": {"logprob": -1.5, "rank": 2}}
    )


def _raise_the_own_tokens(choice, sequence):  # the own token likelier than the k listed: they are not the top k
    for position, entry in enumerate(choice["prompt_logprobs"][1:], 1):
        if len(entry) == 4:
            entry[str(sequence[position])]["logprob"] = entry[str(sequence[position])]["logprob"] / 10


def _logits(entry, own):
    for value in entry.values():
        value["logprob"] += 5.0


def _a_wrong_mass(entry, own):
    for value in entry.values():
        value["logprob"] = -0.1


BROKEN_TOP_K = {
    "no prompt_logprobs": (
        first_choice(lambda choice, sequence: choice.pop("prompt_logprobs")),
        r"returned no prompt_logprobs",
    ),
    "too few entries": (
        _entry(2, _drop_two_top_entries),
        r"returned [12] log-probs at position 2 where prompt_logprobs=3",
    ),
    "ranks that are not 1..k": (_entry(2, _hide_the_own_tokens_rank), r"ranks \[1, 2, 9\] at position 2"),
    "not the top k": (first_choice(_raise_the_own_tokens), r"leave out token \d+, which is likelier than one of them"),
    "logits, not log-probs": (_entry(1, _logits), r"log-prob [\d.]+ > 0 at position 1: .*--logprobs-mode raw_logprobs"),
    "a mass above 1": (_entry(4, _a_wrong_mass), r"top-3 probabilities at position 4 sum to more than 1"),
    "a null inside": (
        first_choice(lambda choice, sequence: choice["prompt_logprobs"].__setitem__(2, None)),
        r"null log-prob for token 2 of a 5-token sequence",
    ),
    "keys that are not ids": (
        _entry(1, lambda entry, own: entry.update({"abc": {"logprob": -1.0}})),
        r"has keys .*, not token ids",
    ),
    "a string log-prob": (
        _entry(1, lambda entry, own: entry[str(own)].update(logprob="-1")),
        r"log-prob '-1' at position 1 is not a number",
    ),
    "other tokens scored": (
        first_choice(
            lambda choice, sequence: choice["prompt_logprobs"].__setitem__(
                2,
                {
                    "30": {"logprob": -0.1, "rank": 1},
                    "31": {"logprob": -3.0, "rank": 2},
                    "32": {"logprob": -4.0, "rank": 3},
                },
            )
        ),
        r"at position 2 its answer has log-probs for token 30, 31, 32 \(prompt_logprobs\) where mentor sent 6",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TOP_K))
def test_a_broken_top_k_answer_is_one_line_and_not_retried(server, case):
    edit, message = BROKEN_TOP_K[case]
    seen = refused_once(
        server,
        edit,
        message,
        lambda url: HTTPTeacher(url, model="tiny-teacher", max_retries=3, backoff=0.01).compute_top_k(SEQUENCES[:1], 3),
    )
    assert seen[0]["prompt_logprobs"] == 3 and seen[0]["echo"] is True


# --- OPD: the remote top_k run equals the in-process one ----------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_opd_top_k_through_serve_teacher_matches_the_in_process_run(
    tiny_dirs, models, tmp_path, prompts_file, temperature
):
    """Same seeds: the same samples, the same teacher top-k (the teacher untempered on both sides), the same
    loss, metrics and weights after three steps."""
    _, teacher, tokenizer = models
    common = dict(
        student=tiny_dirs["student"],
        prompts=prompts_file,
        steps=3,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        learning_rate=1e-3,
        quiet=True,
        seed=3,
        divergence="top_k",
        kl_top_k=5,
        temperature=temperature,
        micro_batch_size=2,
    )
    local_trainer, local_history = run_distill(
        DistillConfig(teacher=tiny_dirs["teacher"], output_dir=str(tmp_path / "local"), **common)
    )
    with TeacherServer(teacher, tokenizer, port=0) as running:
        http_trainer, http_history = run_distill(
            DistillConfig(teacher=running.url, output_dir=str(tmp_path / "http"), **common)
        )
    steps = [(l, h) for l, h in zip(local_history, http_history) if "loss" in l]
    assert len(steps) == 3
    for local_step, http_step in steps:
        assert local_step["completion_length"] == http_step["completion_length"]
        for key in ("full_reverse_kl", "loss", "reverse_kl", "teacher_logprob", "student_logprob", "grad_norm"):
            assert http_step[key] == pytest.approx(local_step[key], abs=1e-5), key
        assert math.isfinite(local_step["full_reverse_kl"]) and local_step["full_reverse_kl"] > 0
    local_weights = dict(local_trainer.model.named_parameters())
    for name, weight in http_trainer.model.named_parameters():
        assert torch.allclose(weight, local_weights[name], atol=1e-6), name


def test_top_k_with_a_server_is_allowed_full_is_not(tiny_dirs, tmp_path):
    DistillConfig(
        student=tiny_dirs["student"],
        teacher="http://127.0.0.1:9/v1",
        task="arithmetic",
        output_dir=str(tmp_path / "a"),
        divergence="top_k",
        kl_top_k=4,
    )
    with pytest.raises(MentorError, match="--divergence full needs the teacher's whole distribution"):
        DistillConfig(
            student=tiny_dirs["student"],
            teacher="http://127.0.0.1:9/v1",
            task="arithmetic",
            output_dir=str(tmp_path / "b"),
            divergence="full",
        )
