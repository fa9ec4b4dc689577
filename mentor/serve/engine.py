"""The scoring engine behind ``mentor serve-teacher``: one worker thread, batch-invariant answers.

HTTP handler threads submit token sequences and wait; the worker takes one request at a time and runs the
model once per length-sorted micro-batch of that request's sequences (up to ``max_batch_tokens`` padded
tokens). Requests are never batched with each other: the numbers a forward pass gives depend (in the last
bits) on the shape of its batch, so a request's scores must depend on its own sequences only, not on what
else happened to be waiting. A retried request then gets bitwise the answer it would have got the first
time. One thread owns the model, so torch never runs two forwards at once on the same weights.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import nn

from mentor.models.logprobs import causal_lm_of, head_fn, last_hidden_states, logprobs_from_hidden
from mentor.rollout import right_pad
from mentor.score.top_k import TeacherTopK, teacher_top_k_from_hidden


@dataclass
class Scored:
    """One sequence's teacher log-probs, plus the greedy next token (for ``max_tokens: 1``)."""

    logprobs: list[float]  # log p(x_t | x_<t); entry 0 is 0 (nothing predicts the first token)
    next_token: int
    next_logprob: float
    top: TeacherTopK | None = None  # with top_k: [n] / [n, k] tensors, token ranks included (row 0: zeros)


@dataclass
class _Job:
    sequences: list[list[int]]
    future: Future
    top_k: int | None = None


class ScoringEngine:
    def __init__(self, model: nn.Module, pad_id: int, max_batch_tokens: int = 16384):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pad_id, self.max_batch_tokens = pad_id, max_batch_tokens
        self.device = next(model.parameters()).device
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="mentor-scoring", daemon=True)
        self._worker.start()

    def submit(self, sequences: list[list[int]], top_k: int | None = None) -> Future:
        """Scores ``sequences``; ``top_k`` (0 or more) also asks for each position's k likeliest tokens and the
        rank of its own token (vLLM's ``prompt_logprobs``)."""
        future: Future = Future()
        self._queue.put(_Job(sequences, future, top_k))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    # --- the worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                scored = self.score(job.sequences, job.top_k)  # this request's sequences only: batch-invariant
            except Exception as exc:  # answer the waiting request; the server reports a 500
                job.future.set_exception(exc)
                continue
            job.future.set_result(scored)

    @torch.no_grad()
    def score(self, sequences: list[list[int]], top_k: int | None = None) -> list[Scored]:
        """Score in length-sorted micro-batches of at most ``max_batch_tokens`` padded tokens."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out: list[Scored | None] = [None] * len(sequences)
        batch: list[int] = []
        for index in order:
            width = len(sequences[index])  # sorted, so the newest is the widest
            if batch and (len(batch) + 1) * width > self.max_batch_tokens:
                self._score_batch(sequences, batch, out, top_k)
                batch = []
            batch.append(index)
        if batch:
            self._score_batch(sequences, batch, out, top_k)
        return out  # type: ignore[return-value]

    def _score_batch(self, sequences: list[list[int]], rows: list[int], out: list, top_k: int | None) -> None:
        chunk = [sequences[i] for i in rows]
        input_ids, attention_mask = right_pad(chunk, self.pad_id)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden = last_hidden_states(self.model, input_ids, attention_mask)
        top = None
        if top_k is None:
            logprobs, _ = logprobs_from_hidden(self.model, hidden, input_ids, attention_mask.bool())
        else:  # the in-process top_k divergence computes exactly this (mentor.score.top_k)
            top = TeacherTopK(
                *(
                    t.cpu()
                    for t in teacher_top_k_from_hidden(
                        self.model, hidden, input_ids, attention_mask.bool(), top_k, with_ranks=True
                    )
                )
            )
            logprobs = top.token_logprobs
        lengths = attention_mask.sum(1)
        # the last real position's hidden state predicts the next token: one row of logits per sequence
        last = hidden[torch.arange(len(chunk), device=hidden.device), lengths - 1]
        next_logprobs = torch.log_softmax(head_fn(causal_lm_of(self.model), 1.0)(last), dim=-1)
        next_best, next_tokens = next_logprobs.max(-1)
        for row, index in enumerate(rows):
            n = len(sequences[index])
            row_top = TeacherTopK(*(t[row, :n] for t in top)) if top is not None else None
            out[index] = Scored(logprobs[row, :n].tolist(), int(next_tokens[row]), float(next_best[row]), row_top)
