"""Greedy (or sampled) accuracy of a model on graded problems."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mentor.data.prompts import Example, encode_prompt
from mentor.sample.base import Sampler
from mentor.sample.hf import HFSampler
from mentor.tasks.base import Problem, Task


@dataclass
class EvalResult:
    accuracy: float
    completions: list[str]
    correct: list[bool]


def evaluate(
    model: nn.Module,
    tokenizer,
    task: Task,
    problems: list[Problem],
    max_new_tokens: int,
    batch_size: int = 128,
    greedy: bool = True,
    temperature: float = 1.0,
    chat_template: bool = False,
    sampler: Sampler | None = None,
) -> EvalResult:
    """Sample a completion per problem (up to the model's end-of-turn tokens) and grade its text.

    ``chat_template``: prompts are user turns rendered by the tokenizer's chat template, as in training.
    ``sampler``: one that already holds ``model`` (a vLLM engine), used instead of transformers ``generate``.
    """
    if sampler is None:
        sampler = HFSampler(
            model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size
        )
    prompt_ids = [encode_prompt(tokenizer, Example(prompt=p.prompt), chat_template) for p in problems]
    with torch.random.fork_rng():  # evaluation must not shift the training run's random stream
        sampled = sampler.sample(prompt_ids, greedy=greedy)
    completions = tokenizer.batch_decode(sampled.completion_ids, skip_special_tokens=True)
    correct = [task.grade(c, p) > 0 for c, p in zip(completions, problems)]
    return EvalResult(sum(correct) / max(len(problems), 1), completions, correct)


def task_evaluator(
    task: Task,
    tokenizer,
    num_problems: int,
    max_new_tokens: int,
    batch_size: int = 128,
    chat_template: bool = False,
    sampler: Sampler | None = None,
):
    """A callback for the trainer: ``model -> {"accuracy": ...}`` on a fixed held-out set (greedy, through
    ``sampler`` when given: the training run's vLLM engine, which then holds the trainer's weights)."""
    problems = task.test_problems(num_problems)

    def run(model: nn.Module) -> dict:
        return {
            "accuracy": evaluate(
                model,
                tokenizer,
                task,
                problems,
                max_new_tokens,
                batch_size,
                chat_template=chat_template,
                sampler=sampler,
            ).accuracy
        }

    return run
