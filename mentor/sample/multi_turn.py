"""Multi-turn rollouts: any sampler writes the student's turns, an environment answers them.

    prompt = template(env.reset(example), tools)
    repeat up to max_turns:  turn = sampler.sample(prompt + completion)   (stops at an end-of-turn token)
                             reply = env.step(decoded turn)               done: stop
                             completion += turn + template-rendered reply (+ the next generation prompt)

The completion is one token list per row, the student's tokens and the environment's interleaved, with a
per-token mask: 1 on the student's sampled tokens (trained, graded by the teacher, their sampler log-probs kept),
0 on the environment's (loss mask 0, sampler log-prob 0). The teacher scores the whole sequence, so each student
token is graded with the whole conversation before it in context.

The student's tokens are kept exactly as sampled (never decoded and re-encoded); the environment's are cut out of
the chat template's own rendering: the conversation up to the student's last turn rendered with and without the
reply, everything after the end-of-turn token that closes the student's turn (``reply_ids``).

All randomness is the wrapped sampler's (seeded from the trainer's generators) and environments are
deterministic, so a resumed run samples the same conversations.
"""

from __future__ import annotations

from mentor.envs.base import EnvReply, EnvSpec
from mentor.errors import MentorError
from mentor.models.chat import has_chat_template, stop_token_ids
from mentor.sample.base import SampledBatch, Sampler


def render(tokenizer, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> list[int]:
    """The chat template's ids for ``messages`` (``tools``: the JSON schemas a tool-aware template lists)."""
    if not has_chat_template(tokenizer):
        raise MentorError("--env needs a chat template to render the conversation, but the tokenizer has none")
    kwargs = {"tools": tools} if tools else {}
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True, **kwargs)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def reply_ids(
    tokenizer, before_turn: list[dict], turn: str, reply: dict, tools: list[dict] | None, stop_ids: list[int]
) -> list[int]:
    """The ids the template writes after the student's ``turn`` (the assistant message after ``before_turn``)
    for ``reply``, up to and including the next generation prompt.

    ``before_turn`` rendered with the generation prompt must be a prefix of the whole conversation rendered with
    the reply (checked); the reply's ids start after the first end-of-turn token past that prefix (what
    closes the student's turn: the student sampled it; a newline the template writes after it belongs to the
    reply's ids, since sampling stopped before it)."""
    prompt = render(tokenizer, before_turn, tools, True)
    full = render(tokenizer, before_turn + [{"role": "assistant", "content": turn}, reply], tools, True)
    if full[: len(prompt)] != prompt:
        raise MentorError(
            "the chat template renders the conversation differently once the environment's reply "
            "is added, so the reply's tokens cannot be cut out of it"
        )
    rest = full[len(prompt) :]
    ends = [i for i, token in enumerate(rest) if token in stop_ids]
    if not ends:
        raise MentorError(
            f"the chat template ends the assistant turn with none of the end-of-turn tokens "
            f"{stop_ids}: the environment's reply cannot be placed after it"
        )
    return rest[ends[0] + 1 :]


class MultiTurnSampler:
    """Wraps ``sampler`` (hf or vllm): ``sample_examples`` runs ``env`` conversations (what ``sample_groups``
    calls); ``sample`` is the wrapped sampler's single turn (greedy evaluation).

    ``max_length``: the longest conversation (prompt + completion); a turn that would not fit, or a reply that
    would leave no room for the next one, ends the conversation as truncated."""

    def __init__(
        self,
        sampler: Sampler,
        tokenizer,
        env: EnvSpec,
        max_turns: int,
        max_new_tokens: int,
        max_length: int | None = None,
        model=None,
    ):
        if max_turns < 1:
            raise MentorError("--max-turns must be at least 1")
        self.sampler, self.tokenizer, self.env = sampler, tokenizer, env
        self.max_turns, self.max_new_tokens, self.max_length = max_turns, max_new_tokens, max_length
        self.stop_ids = getattr(sampler, "stop_ids", None) or stop_token_ids(tokenizer, model)

    def __getattr__(self, name):  # sync_weights, close, model, ...: the wrapped sampler's
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def sample(self, prompt_ids: list[list[int]], greedy: bool = False) -> SampledBatch:
        return self.sampler.sample(prompt_ids, greedy)

    def _fits(self, length: int) -> bool:
        return self.max_length is None or length + self.max_new_tokens <= self.max_length

    def sample_examples(self, examples: list, greedy: bool = False) -> SampledBatch:
        """One conversation per example (repeat an example for a group)."""
        envs = [self.env.make(self.tokenizer) for _ in examples]
        messages = [env.reset(e) for env, e in zip(envs, examples)]
        prompts = [render(self.tokenizer, m, env.tools, True) for m, env in zip(messages, envs)]
        n = len(examples)
        out = SampledBatch(
            prompts,
            [[] for _ in range(n)],
            [[] for _ in range(n)],
            [False] * n,
            completion_mask=[[] for _ in range(n)],
            answers=[""] * n,
            turns=[0] * n,
            env_rewards=[None] * n,
        )
        active = list(range(n))
        for turn_index in range(self.max_turns):
            rows = []
            for i in active:
                if self._fits(len(prompts[i]) + len(out.completion_ids[i])):
                    rows.append(i)
                elif turn_index == 0:
                    raise MentorError(
                        f"a prompt of {len(prompts[i])} tokens leaves no room for --max-new-tokens "
                        f"{self.max_new_tokens} in a context of {self.max_length}"
                    )
                else:
                    out.truncated[i] = True
            if not rows:
                break
            sampled = self.sampler.sample([prompts[i] + out.completion_ids[i] for i in rows], greedy)
            active = []
            for j, i in enumerate(rows):
                ids = sampled.completion_ids[j]
                out.completion_ids[i] += ids
                out.completion_logprobs[i] += list(sampled.completion_logprobs[j])
                out.completion_mask[i] += [1.0] * len(ids)
                out.turns[i] += 1
                body = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
                text = self.tokenizer.decode(body, skip_special_tokens=False)
                out.answers[i] = self.tokenizer.decode(body, skip_special_tokens=True)
                if sampled.truncated[j]:
                    out.truncated[i] = True
                    continue
                reply = envs[i].step(text)
                if not isinstance(reply, EnvReply):
                    raise MentorError(f"environment {self.env.name!r} answered {type(reply).__name__}, not an EnvReply")
                before = list(messages[i])
                messages[i].append({"role": "assistant", "content": text})
                if reply.kind == "done":
                    out.env_rewards[i] = reply.reward
                    continue
                if turn_index == self.max_turns - 1:
                    continue  # out of turns: the conversation ends on the student's turn
                appended = reply_ids(self.tokenizer, before, text, reply.message(), envs[i].tools, self.stop_ids)
                if not self._fits(len(prompts[i]) + len(out.completion_ids[i]) + len(appended)):
                    out.truncated[i] = True
                    continue
                messages[i].append(reply.message())
                out.completion_ids[i] += appended
                out.completion_logprobs[i] += [0.0] * len(appended)
                out.completion_mask[i] += [0.0] * len(appended)
                active.append(i)
        return out
