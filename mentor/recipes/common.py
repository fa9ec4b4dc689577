"""Pieces every recipe needs: quiet transformers, task examples, prompt limits."""

from __future__ import annotations

from mentor.data.prompts import EncodedExample, encode_completion
from mentor.tasks.base import Task


def quiet_transformers() -> None:
    """transformers' own progress bars and warnings would drown mentor's progress bar."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def task_examples(task: Task, tokenizer, n: int, seed: int, with_solution: bool = True) -> list[EncodedExample]:
    out = []
    for problem in task.train_problems(n, seed):
        completion = encode_completion(tokenizer, problem.solution) if with_solution else None
        out.append(EncodedExample(tokenizer(problem.prompt)["input_ids"], completion, problem.prompt, problem))
    return out


def prompt_limit(model, max_prompt_tokens: int, max_new_tokens: int) -> int | None:
    """Longest prompt that still leaves room for ``max_new_tokens`` in the model's context."""
    from mentor.models.loading import context_length

    if max_prompt_tokens:
        return max_prompt_tokens
    context = context_length(model)
    return None if context is None else max(1, context - max_new_tokens)
