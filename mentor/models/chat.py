"""Where a turn starts and ends, as the model's own chat template and generation config say.

One place decides this for every sampler, grader and SFT path, so they all agree:
- a prompt is ``apply_chat_template(messages, add_generation_prompt=True)``;
- a turn ends at any id of ``generation_config.eos_token_id`` (instruct models list several:
  ``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>``) or the tokenizer's EOS;
- an SFT target is the assistant turn exactly as the template renders it, up to its end-of-turn token.
"""

from __future__ import annotations

from torch import nn

from mentor.errors import MentorError
from mentor.models.logprobs import causal_lm_of


def stop_token_ids(tokenizer, model: nn.Module | None = None) -> list[int]:
    """Every id that ends a completion: the model's generation config EOS list plus the tokenizer's EOS."""
    ids: list[int] = []
    config = getattr(causal_lm_of(model), "generation_config", None) if model is not None else None
    configured = getattr(config, "eos_token_id", None)
    for value in (configured if isinstance(configured, (list, tuple)) else [configured]) + [tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if not ids:
        raise MentorError(
            "the tokenizer defines no EOS token and the model's generation config lists none: "
            "set eos_token in tokenizer_config.json or eos_token_id in generation_config.json"
        )
    return ids


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if not has_chat_template(tokenizer):
        raise MentorError(
            "this data needs a chat template but the tokenizer has none: "
            "use plain 'prompt' records or a tokenizer with a chat_template"
        )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def check_prompt_messages(messages: list[dict], where: str = "prompt") -> None:
    """A prompt asks for the next assistant turn: it cannot already end with one."""
    if messages and messages[-1].get("role") == "assistant":
        raise MentorError(
            f"{where}: the chat ends with an assistant turn, so there is nothing for the model to "
            "answer: end prompts with a user turn (or train on it with sft)"
        )


def assistant_turn_ids(tokenizer, prompt_messages: list[dict], content: str, stop_ids: list[int]) -> list[int]:
    """The tokens of an assistant turn as the chat template renders it after ``prompt_messages``.

    It is the rendered conversation minus the rendered generation prompt, up to and including the first
    end-of-turn token: what the template writes after it (a newline before the next turn) is never sampled,
    because sampling stops there.
    """
    prompt = chat_ids(tokenizer, prompt_messages, add_generation_prompt=True)
    full = chat_ids(
        tokenizer, prompt_messages + [{"role": "assistant", "content": content}], add_generation_prompt=False
    )
    if full[: len(prompt)] != prompt:
        raise MentorError(
            "the chat template renders the conversation differently with and without the "
            "assistant turn, so the turn cannot be cut out of it: use a template whose generation "
            "prompt is a prefix of the rendered assistant turn"
        )
    turn = full[len(prompt) :]
    ends = [i for i, token in enumerate(turn) if token in stop_ids]
    if not ends:
        raise MentorError(
            f"the chat template ends an assistant turn with none of the model's end-of-turn tokens "
            f"{stop_ids}: add the template's end-of-turn token to generation_config.eos_token_id"
        )
    return turn[: ends[0] + 1]


def describe_differences(
    student_tokenizer, teacher_tokenizer, student_stops: list[int], teacher_stops: list[int]
) -> list[str]:
    """What a teacher and student disagree on about turns (the teacher grades text formatted for the student)."""
    problems = []
    if (student_tokenizer.chat_template or "") != (getattr(teacher_tokenizer, "chat_template", None) or ""):
        problems.append("their chat templates differ (the teacher grades prompts formatted by the student's)")
    if set(student_stops) != set(teacher_stops):
        problems.append(f"their turns end with different tokens (student {student_stops}, teacher {teacher_stops})")
    return problems
