"""The one data type that flows through the pipeline: a batch of token sequences.

Every per-token tensor is aligned with ``input_ids``: entry ``[b, t]`` is about token ``input_ids[b, t]``
as predicted from the prefix ``input_ids[b, :t]``. Sequences are right-padded, so position ids are
simply ``0..T-1`` and a prompt starts at index 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # [B, T] long, right-padded prompt + completion
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    loss_mask: torch.Tensor  # [B, T] float, 1 on the tokens we train on (completion tokens)
    sampler_logprobs: torch.Tensor  # [B, T] float32 log q(x_t) of the sampling policy, 0 elsewhere
    advantages: torch.Tensor  # [B, T] float32 per-token weight, filled in by the weigh stage
    prompt_lengths: torch.Tensor  # [B] long
    group_ids: torch.Tensor  # [B] long, samples of the same prompt share an id
    teacher_logprobs: torch.Tensor | None = None  # [B, T] float32, filled in by the score stage
    rewards: torch.Tensor | None = None  # [B] float32 sequence-level rewards, if a grader ran
    truncated: torch.Tensor | None = None  # [B] bool, completion hit max_new_tokens without EOS
    categories: torch.Tensor | None = None  # [B] long, each sequence's data category (CoE routing labels)
    teacher_top_ids: torch.Tensor | None = None  # [B, T, k] long, the teacher's k likeliest tokens (OPD top_k)
    teacher_top_logprobs: torch.Tensor | None = None  # [B, T, k] float32, their log-probs under the teacher
    # privileged context (OPD): what the teacher reads instead, its own prompt + the same completion, [B, T'];
    # None when the teacher reads input_ids (see add_teacher_prompts)
    teacher_input_ids: torch.Tensor | None = None
    teacher_attention_mask: torch.Tensor | None = None
    teacher_prompt_lengths: torch.Tensor | None = None  # [B] long
    completions: list[str] = field(default_factory=list)  # decoded, for graders and logs
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum().item())

    def select(self, index: torch.Tensor | slice) -> RolloutBatch:
        """Rows of the batch (for substeps and micro-batches)."""
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                out[f.name] = value[index]
            elif isinstance(value, list) and value:
                out[f.name] = [value[i] for i in index.tolist()]
            else:
                out[f.name] = value
        return replace(self, **out)

    @property
    def teacher_shift(self) -> torch.Tensor:
        """``[B]``: the teacher reads the student's token ``t`` at position ``t + shift`` (0 without its own prompt)."""
        if self.teacher_prompt_lengths is None:
            return torch.zeros_like(self.prompt_lengths)
        return self.teacher_prompt_lengths - self.prompt_lengths

    def teacher_sequences(self) -> tuple[list[list[int]], list[int]]:
        """The token lists the teacher scores and where each one's completion starts in them."""
        if self.teacher_input_ids is None:
            lengths = self.attention_mask.sum(1).tolist()
            return [self.input_ids[i, :n].tolist() for i, n in enumerate(lengths)], self.prompt_lengths.tolist()
        lengths = self.teacher_attention_mask.sum(1).tolist()
        return (
            [self.teacher_input_ids[i, :n].tolist() for i, n in enumerate(lengths)],
            self.teacher_prompt_lengths.tolist(),
        )

    def to_student_positions(self, values: torch.Tensor) -> torch.Tensor:
        """``[B, T', ...]`` values aligned with the teacher's sequences, moved onto the student's ``[B, T, ...]``
        completion positions (0 elsewhere); ``values`` itself when the teacher reads the student's sequences."""
        if self.teacher_input_ids is None:
            return values
        return _completions_moved(values, self.input_ids, self.attention_mask, self.prompt_lengths, self.teacher_shift)

    def to_teacher_positions(self, values: torch.Tensor) -> torch.Tensor:
        """The inverse of ``to_student_positions``: student-aligned ``[B, T, ...]`` values at the teacher's
        completion positions ``[B, T', ...]``."""
        if self.teacher_input_ids is None:
            return values
        return _completions_moved(
            values,
            self.teacher_input_ids,
            self.teacher_attention_mask,
            self.teacher_prompt_lengths,
            -self.teacher_shift,
        )

    def to(self, device: torch.device | str) -> RolloutBatch:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in out.items():
            if isinstance(value, torch.Tensor):
                out[name] = value.to(device)
        return replace(self, **out)


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
    return input_ids, attention_mask


def _completions_moved(
    values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lengths: torch.Tensor,
    shift: torch.Tensor,
) -> torch.Tensor:
    """``values`` read at ``t + shift`` for every completion position ``t`` of ``input_ids`` (0 elsewhere)."""
    out = values.new_zeros((*input_ids.shape, *values.shape[2:]))
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    rows, cols = ((positions >= prompt_lengths.unsqueeze(1)) & attention_mask.bool()).nonzero(as_tuple=True)
    out[rows, cols] = values[rows, cols + shift[rows]]
    return out


def add_teacher_prompts(batch: RolloutBatch, prompts: list[list[int] | None], pad_id: int) -> None:
    """Privileged context: give each row the teacher's own prompt (``None``: the student's) followed by the row's
    completion, as ``batch.teacher_*``. Nothing changes when no row has one: the teacher reads ``input_ids``."""
    if all(p is None for p in prompts):
        return
    lengths = batch.attention_mask.sum(1).tolist()
    sequences, prompt_lengths = [], []
    for i, (prompt, n, start) in enumerate(zip(prompts, lengths, batch.prompt_lengths.tolist())):
        prompt = list(prompt) if prompt is not None else batch.input_ids[i, :start].tolist()
        sequences.append(prompt + batch.input_ids[i, start:n].tolist())
        prompt_lengths.append(len(prompt))
    batch.teacher_input_ids, batch.teacher_attention_mask = right_pad(sequences, pad_id)
    batch.teacher_prompt_lengths = torch.tensor(prompt_lengths)
