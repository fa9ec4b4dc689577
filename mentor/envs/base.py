"""The environment interface of multi-turn rollouts, and the registry ``--env`` picks from.

An environment holds one conversation: ``reset(example)`` gives its opening messages, ``step(turn)`` answers
the student's turn (the decoded text of the tokens it sampled) with an ``EnvReply``:

- ``tool_result``: a tool's output, rendered as the chat template's ``tool`` message;
- ``user``: the next user turn;
- ``done``: the conversation is over (``reward``: the environment's verdict on it, when it has one).

``mentor.sample.multi_turn`` runs the conversations (any sampler writes the student's turns); environments never
see token ids, so one works with every tokenizer. An ``EnvSpec`` is what the registry holds: a name, a one-line
description, and ``make(tokenizer)``, called once per conversation (a fresh object, so state never leaks
between rows; everything an environment does must be deterministic, or resumed runs would differ).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mentor.errors import MentorError

REPLY_KINDS = ("tool_result", "user", "done")


@dataclass
class EnvReply:
    kind: str  # one of REPLY_KINDS
    content: str = ""
    reward: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in REPLY_KINDS:
            raise ValueError(f"an environment replied {self.kind!r}: use one of {', '.join(REPLY_KINDS)}")

    def message(self) -> dict:
        """The chat message the template renders for this reply."""
        return {"role": "tool" if self.kind == "tool_result" else "user", "content": self.content}


class Environment(Protocol):
    tools: list[dict] | None  # JSON schemas handed to the chat template (``apply_chat_template(tools=...)``)

    def reset(self, example) -> list[dict]:
        """The opening messages of the conversation about ``example`` (an ``EncodedExample``)."""

    def step(self, turn: str) -> EnvReply:
        """The answer to the student's latest turn."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    make: Callable[[object], Environment]  # tokenizer -> a fresh environment for one conversation
    description: str = ""


ENVIRONMENTS: dict[str, EnvSpec] = {}


def register_env(spec: EnvSpec) -> EnvSpec:
    ENVIRONMENTS[spec.name] = spec
    return spec


def get_env(name: str) -> EnvSpec:
    if name not in ENVIRONMENTS:
        raise MentorError(f"--env {name!r} is unknown: choose one of {', '.join(sorted(ENVIRONMENTS)) or 'none'}")
    return ENVIRONMENTS[name]


# --- tool calls in the template's own format ------------------------------------------------------------
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_PLAIN_CALL = re.compile(r"^\s*(\w+):\s*(.*?)\s*$", re.DOTALL)


def tool_call_format(tokenizer) -> str:
    """``hermes`` when the chat template writes tool calls as ``<tool_call>{json}</tool_call>`` (Qwen2.5/3,
    Hermes), else ``plain``: a turn ``name: argument`` (a template without tool support, the tiny char models)."""
    return "hermes" if "<tool_call>" in (getattr(tokenizer, "chat_template", None) or "") else "plain"


def parse_tool_call(turn: str, fmt: str) -> tuple[str, dict | str] | None:
    """``(tool name, arguments)`` of the first tool call in ``turn``, or None when it makes none.

    hermes: the JSON object's ``name`` and ``arguments`` (a dict; a string when the JSON does not parse, so the
    tool can say so); plain: ``name`` and the rest of the line."""
    if fmt == "hermes":
        found = _HERMES_CALL.search(turn)
        if found is None:
            return None
        try:
            call = json.loads(found.group(1))
        except json.JSONDecodeError:
            return "", found.group(1)
        if not isinstance(call, dict):
            return "", found.group(1)
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        return str(call.get("name", "")), arguments
    found = _PLAIN_CALL.match(turn)
    return (found.group(1), found.group(2)) if found else None
