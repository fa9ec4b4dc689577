"""JSONL prompts (``prompt`` text or chat ``messages``) and SFT examples, encoded with the user's tokenizer."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mentor.errors import MentorError
from mentor.files import read_user_file
from mentor.models.chat import assistant_turn_ids, chat_ids


@dataclass
class Example:
    """One training item: a prompt, optionally a target completion, optionally a reference answer."""

    prompt: str | None = None
    messages: list[dict] | None = None
    completion: str | None = None
    answer: str | None = None
    meta: dict = field(default_factory=dict)
    # privileged context (distill): the teacher's own prompt, as text or chat, or a context for the template
    teacher_prompt: str | None = None
    teacher_messages: list[dict] | None = None
    context: str | None = None


def read_data_file(path: str | Path) -> bytes:
    """A data file's bytes, or one line saying why there are none."""
    return read_user_file(
        path, "data file", missing="check the path", not_a_file=f"pass a {Path(path).suffix or '.jsonl'} file"
    )


def read_jsonl(path: str | Path) -> list[dict]:
    return parse_jsonl(read_data_file(path).splitlines(), str(path))


def parse_jsonl(lines: list[bytes], where: str) -> list[dict]:
    """One JSON object per line; blank lines are skipped; any other line names its number in the error."""
    records = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MentorError(f"{where}:{number}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = getattr(exc, "msg", "nested too deeply")
            raise MentorError(
                f"{where}:{number}: not valid JSON ({reason}); each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise MentorError(
                f'{where}:{number}: expected a JSON object such as {{"prompt": "..."}}, got {type(record).__name__}'
            )
        records.append(record)
    if not records:
        raise MentorError(f"{where} holds no records: write one JSON object per line")
    return records


def _check_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise MentorError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise MentorError(f"{where}: every message needs string 'role' and 'content' fields")
    return messages


def parse_example(record: dict, where: str, need_completion: bool = False) -> Example:
    """A record in any of the accepted schemas: prompt[/completion], messages, question/answer (GSM8K)."""
    answer = record.get("answer")
    if "messages" in record:
        messages = _check_messages(record["messages"], where)
        completion = None
        if messages[-1]["role"] == "assistant":
            # the prompt is the chat up to the final assistant turn, which is the target (SFT) or unused
            completion, messages = messages[-1]["content"], messages[:-1]
            if not any(m["role"] == "user" for m in messages):
                raise MentorError(f"{where}: the assistant message needs a user message before it")
        elif need_completion:
            raise MentorError(f"{where}: SFT needs the chat to end with the assistant message to train on")
        example = Example(messages=messages, completion=completion, answer=answer)
    elif "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise MentorError(f"{where}: 'prompt' must be a non-empty string")
        completion = record.get("completion", record.get("response"))
        example = Example(prompt=prompt, completion=completion, answer=answer)
    elif "question" in record:
        question = record["question"]
        if not isinstance(question, (str, int, float)) or not str(question).strip():
            raise MentorError(f"{where}: 'question' must be a non-empty string")
        example = Example(prompt=str(question), answer=answer)
    else:
        raise MentorError(f"{where}: a record needs a 'prompt' (text) or 'messages' (chat) field")
    if need_completion and not isinstance(example.completion, str):
        raise MentorError(f"{where}: SFT needs a 'completion' field or a final assistant message")
    _read_teacher_fields(example, record, where)
    example.meta = {
        k: v for k, v in record.items() if k not in ("prompt", "messages", "completion", "response", *TEACHER_FIELDS)
    }
    return example


TEACHER_FIELDS = ("teacher_prompt", "teacher_messages", "context")  # what the teacher sees instead (distill)


def _read_teacher_fields(example: Example, record: dict, where: str) -> None:
    given = [name for name in TEACHER_FIELDS if record.get(name) is not None]
    if len(given) > 1:
        raise MentorError(
            f"{where}: give the teacher one of 'teacher_prompt', 'teacher_messages' or 'context', "
            f"not {' and '.join(map(repr, given))}"
        )
    if not given:
        return
    name, value = given[0], record[given[0]]
    if name == "teacher_messages":
        example.teacher_messages = _check_messages(value, f"{where}: teacher_messages")
        if value[-1]["role"] == "assistant":
            raise MentorError(
                f"{where}: 'teacher_messages' ends with an assistant turn: end it where the student's "
                "completion starts (a user turn)"
            )
    elif not isinstance(value, str) or not value.strip():
        raise MentorError(f"{where}: {name!r} must be a non-empty string")
    else:
        setattr(example, name, value)


DEFAULT_CONTEXT_TEMPLATE = "{context}\n\n{prompt}"
_PLACEHOLDER = re.compile(r"\{(context|prompt)\}")


def check_context_template(template: str) -> None:
    missing = [name for name in ("{context}", "{prompt}") if name not in template]
    if missing:
        raise MentorError(
            f"--teacher-context-template needs {' and '.join(missing)}: e.g. {DEFAULT_CONTEXT_TEMPLATE!r}"
        )


def fill_context(template: str, context: str, prompt: str) -> str:
    """``template`` with ``{context}`` and ``{prompt}`` replaced in one pass (braces in either text stay)."""
    return _PLACEHOLDER.sub(lambda m: context if m.group(1) == "context" else prompt, template)


def read_context(value: str) -> str:
    """``--teacher-context``: a file's text when ``value`` names a file, otherwise ``value`` itself."""
    if os.path.isfile(value):
        try:
            return read_user_file(
                value, "teacher context file", missing="check the path", not_a_file="pass a text file"
            ).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MentorError(
                f"teacher context file {value!r}: not UTF-8 text (byte {exc.start}): save it as UTF-8"
            ) from None
    if not any(c.isspace() for c in value) and re.search(r"[/\\]|\.(txt|md|json|jsonl)$", value):
        raise MentorError(
            f"--teacher-context {value!r} looks like a path but no such file exists: check the path "
            "(or write the context itself, with spaces)"
        )
    return value


def load_examples(path: str | Path, need_completion: bool = False) -> list[Example]:
    return [parse_example(r, f"{path}:{i + 1}", need_completion) for i, r in enumerate(read_jsonl(path))]


def encode_prompt(tokenizer, example: Example, use_chat_template: bool | None = None) -> list[int]:
    """Token ids of the prompt. Chat messages always use the chat template; plain text uses it if asked."""
    if example.messages is not None or use_chat_template:
        return chat_ids(tokenizer, prompt_messages(example), add_generation_prompt=True)
    return list(tokenizer(example.prompt, add_special_tokens=True)["input_ids"])


def prompt_messages(example: Example) -> list[dict]:
    return example.messages or [{"role": "user", "content": example.prompt}]


def encode_target(tokenizer, example: Example, use_chat_template: bool, stop_ids: list[int]) -> list[int]:
    """The completion to train on: the assistant turn as the chat template renders it, or text + EOS."""
    if example.messages is not None or use_chat_template:
        return assistant_turn_ids(tokenizer, prompt_messages(example), example.completion, stop_ids)
    return encode_completion(tokenizer, example.completion)


def encode_completion(tokenizer, completion: str) -> list[int]:
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]


class ExampleStream:
    """Batches of examples, reshuffled each epoch from ``seed``; its position can be saved and restored."""

    def __init__(self, examples: list, batch_size: int, seed: int = 0, shuffle: bool = True):
        if not examples:
            raise MentorError("no training examples")
        self.examples, self.batch_size, self.seed, self.shuffle = examples, batch_size, seed, shuffle
        self.epoch, self.index = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.examples)))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def next_batch(self) -> list:
        batch = []
        while len(batch) < self.batch_size:
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation()
            batch.append(self.examples[self._order[self.index]])
            self.index += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation()


@dataclass
class EncodedExample:
    """What the pipeline consumes: prompt token ids, an optional target completion, and what grades it."""

    prompt_ids: list[int]
    completion_ids: list[int] | None = None
    text: str = ""
    reference: object = None  # a tasks.Problem, or the raw answer string, for graders
    source: str = ""  # the data set it came from (multi-teacher distillation picks the teacher by it)
    teacher_prompt_ids: list[int] | None = None  # the teacher's own prompt (privileged context); None: prompt_ids


@dataclass
class TeacherPrompts:
    """How the teacher's own prompts are made (privileged-context distillation, ``docs/privileged_context.md``).

    ``tokenizer``: the teacher's (its chat template renders ``teacher_messages``), or a function that loads it
    when a teacher prompt first needs it; ``context``: one context for
    every record without a teacher prompt or context of its own (``--teacher-context``); ``template``: how a
    context and the prompt make the teacher's prompt; ``max_tokens``: the longest teacher prompt that leaves room
    for the completion in the teacher's context (None: unknown).
    """

    tokenizer: object
    context: str | None = None
    template: str = DEFAULT_CONTEXT_TEMPLATE
    max_tokens: int | None = None

    def encode(self, example: Example, use_chat_template: bool = False) -> list[int] | None:
        """The teacher's prompt ids for ``example``, or None when the teacher sees the student's prompt.

        ``teacher_messages`` always go through the teacher's chat template; ``teacher_prompt`` and a context are
        encoded as the student's prompt is (in the chat template when it is); in a chat a context is filled
        into the last user message."""
        if (
            example.teacher_messages is None
            and example.teacher_prompt is None
            and example.context is None
            and self.context is None
        ):
            return None
        if callable(self.tokenizer) and not hasattr(self.tokenizer, "get_vocab"):
            self.tokenizer = self.tokenizer()  # loaded once, on first use
        tokenizer = self.tokenizer
        if example.teacher_messages is not None:
            return chat_ids(tokenizer, example.teacher_messages, add_generation_prompt=True)
        if example.teacher_prompt is not None:
            return encode_prompt(
                tokenizer, Example(prompt=example.teacher_prompt), use_chat_template or example.messages is not None
            )
        context = example.context if example.context is not None else self.context
        if context is None:
            return None
        if example.messages is None:
            return encode_prompt(
                tokenizer, Example(prompt=fill_context(self.template, context, example.prompt)), use_chat_template
            )
        messages = [dict(m) for m in example.messages]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"] or [len(messages) - 1]
        messages[users[-1]]["content"] = fill_context(self.template, context, messages[users[-1]]["content"])
        return chat_ids(tokenizer, messages, add_generation_prompt=True)

    def too_long(self, ids: list[int], where: str) -> str | None:
        """Why ``ids`` cannot be the teacher's prompt (one line naming ``where``), or None when it fits."""
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            return (
                f"{where}: the teacher's prompt has {len(ids)} tokens, over the {self.max_tokens} that its "
                "context leaves beside --max-new-tokens: shorten the context"
            )
        return None


def longest_token(tokenizer) -> int:
    """Characters in the vocabulary's longest token (byte-level BPE writes one character per byte)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def encode_examples(
    tokenizer,
    examples: list[Example],
    *,
    use_chat_template: bool = False,
    max_prompt_tokens: int | None = None,
    long_prompts: str = "skip",
    need_completion: bool = False,
    stop_ids: list[int] | None = None,
    teacher: TeacherPrompts | None = None,
) -> tuple[list[EncodedExample], int]:
    """Encode examples; prompts longer than ``max_prompt_tokens`` are skipped (counted) or fail.

    ``stop_ids`` (the model's end-of-turn tokens, ``mentor.models.chat.stop_token_ids``) end chat targets.
    ``teacher`` (distill) encodes the teacher's own prompts; one over ``teacher.max_tokens`` is skipped or fails
    like a long prompt.
    """
    encoded, skipped, teacher_skipped = [], 0, 0
    stop_ids = stop_ids or [tokenizer.eos_token_id]
    # sizes are checked before tokenising: a prompt with more characters than the limit's tokens can hold is
    # over it for sure (no token covers more than the longest in the vocabulary; x4 for normalisation)
    max_chars = max_prompt_tokens * 4 * longest_token(tokenizer) if max_prompt_tokens else None
    for i, example in enumerate(examples):
        chars = len(example.prompt or "") + sum(len(m["content"]) for m in example.messages or [])
        if max_chars and chars > max_chars:
            if long_prompts == "fail":
                raise MentorError(
                    f"example {i + 1}: prompt has {chars} characters, far over the limit of "
                    f"{max_prompt_tokens} tokens: shorten it or pass --long-prompts skip"
                )
            skipped += 1
            continue
        ids = encode_prompt(tokenizer, example, use_chat_template)
        if max_prompt_tokens and len(ids) > max_prompt_tokens:
            if long_prompts == "fail":
                raise MentorError(
                    f"example {i + 1}: prompt has {len(ids)} tokens, over the limit of "
                    f"{max_prompt_tokens}: shorten it or pass --long-prompts skip"
                )
            skipped += 1
            continue
        teacher_ids = teacher.encode(example, use_chat_template) if teacher is not None else None
        too_long = teacher.too_long(teacher_ids, f"example {i + 1}") if teacher_ids is not None else None
        if too_long:
            if long_prompts == "fail":
                raise MentorError(f"{too_long} or pass --long-prompts skip")
            skipped, teacher_skipped = skipped + 1, teacher_skipped + 1
            continue
        completion = encode_target(tokenizer, example, use_chat_template, stop_ids) if need_completion else None
        text = example.prompt if example.prompt is not None else example.messages[-1]["content"]
        encoded.append(EncodedExample(ids, completion, text, example.answer, teacher_prompt_ids=teacher_ids))
    if not encoded and teacher_skipped:
        raise MentorError(
            f"all {skipped} prompts are too long, {teacher_skipped} of them the teacher's (over "
            f"{teacher.max_tokens} tokens with its context): shorten the context or lower "
            "--max-new-tokens"
        )
    if not encoded:
        raise MentorError(
            f"all {skipped} prompts are longer than {max_prompt_tokens} tokens: raise "
            "--max-prompt-tokens or use a model with a longer context"
        )
    return encoded, skipped
