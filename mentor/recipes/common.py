"""Pieces every recipe needs: quiet transformers, task examples, prompt files within the context."""

from __future__ import annotations

import logging

from mentor.data.prompts import (
    EncodedExample,
    Example,
    TeacherPrompts,
    encode_examples,
    encode_prompt,
    encode_target,
    load_examples,
)
from mentor.models.chat import stop_token_ids
from mentor.tasks.base import Task

logger = logging.getLogger(__name__)


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


def task_examples(
    task: Task,
    tokenizer,
    n: int,
    seed: int,
    with_solution: bool = True,
    chat_template: bool = False,
    model=None,
    teacher: TeacherPrompts | None = None,
) -> list[EncodedExample]:
    """A built-in task's problems, encoded as a file's records would be (chat template included if asked).

    ``model`` gives the end-of-turn tokens (its generation config) that chat-template targets end with.
    ``teacher`` (distill): the teacher's own prompts, from ``--teacher-context``.
    """
    from mentor.errors import MentorError

    stop_ids = stop_token_ids(tokenizer, model)
    out = []
    for problem in task.train_problems(n, seed):
        example = Example(prompt=problem.prompt, completion=problem.solution)
        completion = encode_target(tokenizer, example, chat_template, stop_ids) if with_solution else None
        teacher_ids = teacher.encode(example, chat_template) if teacher is not None else None
        too_long = teacher.too_long(teacher_ids, f"{task.name} problem {len(out) + 1}") if teacher_ids else None
        if too_long:
            raise MentorError(f"{too_long} or lower --max-new-tokens")
        out.append(
            EncodedExample(
                encode_prompt(tokenizer, example, chat_template),
                completion,
                problem.prompt,
                problem,
                teacher_prompt_ids=teacher_ids,
            )
        )
    return out


def prompt_limit(model, max_prompt_tokens: int, max_new_tokens: int) -> int | None:
    """Longest prompt that still leaves room for ``max_new_tokens`` in the model's context."""
    from mentor.errors import MentorError
    from mentor.models.loading import context_length

    context = context_length(model)
    if context is not None and max_new_tokens >= context:
        raise MentorError(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's context "
            f"of {context} tokens: lower it below {context}"
        )
    if context is not None and max_prompt_tokens + max_new_tokens > context:
        raise MentorError(
            f"--max-prompt-tokens {max_prompt_tokens} plus --max-new-tokens {max_new_tokens} exceed "
            f"the model's context of {context} tokens: lower one of them"
        )
    if max_prompt_tokens:
        return max_prompt_tokens
    return None if context is None else context - max_new_tokens


def file_examples(
    path: str, tokenizer, model, config, need_completion: bool = False, teacher: TeacherPrompts | None = None
) -> list[EncodedExample]:
    """A JSONL file's examples, encoded, without prompts that leave no room for ``config.max_new_tokens``.

    Too-long prompts are skipped and the count is said once, or fail, as ``config.long_prompts`` asks.
    ``teacher`` (distill): how the teacher's own prompts are encoded and bounded (privileged context).
    """
    records = load_examples(path, need_completion=need_completion)  # the file's own errors come first
    limit = prompt_limit(model, config.max_prompt_tokens, config.max_new_tokens)
    examples, skipped = encode_examples(
        tokenizer,
        records,
        use_chat_template=config.chat_template,
        max_prompt_tokens=limit,
        long_prompts=config.long_prompts,
        need_completion=need_completion,
        stop_ids=stop_token_ids(tokenizer, model),
        teacher=teacher,
    )
    if skipped:
        logger.warning(
            f"{path}: skipped {skipped} prompts longer than the context allows "
            f"(--max-prompt-tokens / --long-prompts fail to change this)"
        )
    return examples
