"""A run's sample log: a few completions, token by token, with the numbers behind the update.

Every ``sample_log_every`` steps (and at the first and the last step) the trainer writes ``sample_log_rows``
sequences of the step's batch to ``samples.jsonl`` in the run directory, one JSON object per sequence:

    step, row, group, prompt, completion, token_ids, tokens, sampler_logprobs
    teacher_logprobs        OPD with a teacher that scored the tokens (absent otherwise)
    teacher_top1_ids/_top1  the teacher's likeliest token at each position (an in-process teacher only)
    reward, truncated       when the run has them

Only the completion's tokens are kept (the prompt is its text). It is bounded: at most ``MAX_LOGGED_STEPS``
steps are logged in a run (the stride grows for long runs), each row keeps at most ``MAX_TOKENS`` tokens,
log-probs are rounded to 1e-4. Logging reads the batch after the update and draws no random numbers, so
training is bit-for-bit the same with it on or off; on resume, records past the checkpoint are dropped
(they are written again, identically, by the resumed steps).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from mentor.errors import MentorError
from mentor.train.run_dir import read_records, truncate_records

SAMPLES_FILE = "samples.jsonl"
MAX_LOGGED_STEPS = 100
MAX_TOKENS = 2048
DIGITS = 4


def logged_steps_stride(every: int, steps: int) -> int:
    """The stride between logged steps: ``every``, widened so that a run logs at most MAX_LOGGED_STEPS."""
    if every <= 0:
        return 0
    return every * max(1, math.ceil(steps / (every * MAX_LOGGED_STEPS)))


def is_logged_step(step: int, every: int, steps: int) -> bool:
    stride = logged_steps_stride(every, steps)
    return bool(stride) and (step == 1 or step == steps or step % stride == 0)


def chosen_rows(batch_rows: int, wanted: int) -> list[int]:
    """Rows spread over the batch (so over different prompts when the batch holds groups); deterministic."""
    wanted = min(wanted, batch_rows)
    return sorted({(i * batch_rows) // wanted for i in range(wanted)}) if wanted > 0 else []


def _rounded(values) -> list[float]:
    return [round(float(v), DIGITS) for v in values]


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each token as the text it adds (byte pieces of a multi-byte character show as U+FFFD)."""
    return [tokenizer.decode([i]) for i in ids]


def sample_records(step: int, batch, tokenizer, rows: list[int], teacher=None) -> list[dict]:
    """The log records of ``rows`` of a scored batch. ``teacher``: an in-process teacher (anything with
    ``logprobs_and_top1``) asked for its preferred token at each position, and for its log-probs when the
    batch has none (the full/top-k divergences score inside the update)."""
    lengths = batch.attention_mask.sum(1).tolist()
    spans = []
    for i in rows:
        start = int(batch.prompt_lengths[i])
        end = min(int(lengths[i]), start + MAX_TOKENS)
        spans.append((i, start, end))
    extra: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if teacher is not None and hasattr(teacher, "logprobs_and_top1") and spans:
        # the teacher's own sequences (privileged context: its prompt + the completion), moved back onto the row's
        teacher_sequences, teacher_starts = batch.teacher_sequences()
        shifts = [teacher_starts[i] - start for i, start, _ in spans]
        sequences = [teacher_sequences[i][: end + shift] for (i, _, end), shift in zip(spans, shifts)]
        scored = teacher.logprobs_and_top1(
            sequences, score_from=[start + shift for (_, start, _), shift in zip(spans, shifts)]
        )
        extra = {
            i: tuple(t[shift:] if shift >= 0 else torch.cat([t.new_zeros(-shift), t]) for t in pair)
            for (i, _, _), shift, pair in zip(spans, shifts, scored)
        }
    records = []
    for i, start, end in spans:
        ids = batch.input_ids[i, start:end].tolist()
        record = {
            "step": step,
            "row": i,
            "group": int(batch.group_ids[i]),
            "prompt": batch.prompts[i] if i < len(batch.prompts) else "",
            "completion": batch.completions[i] if i < len(batch.completions) else tokenizer.decode(ids),
            "token_ids": ids,
            "tokens": token_strings(tokenizer, ids),
            "sampler_logprobs": _rounded(batch.sampler_logprobs[i, start:end].tolist()),
        }
        if batch.teacher_logprobs is not None:
            record["teacher_logprobs"] = _rounded(batch.teacher_logprobs[i, start:end].tolist())
        if i in extra:
            logprobs, top1 = extra[i]
            record.setdefault("teacher_logprobs", _rounded(logprobs[start:end].tolist()))
            top_ids = [int(t) for t in top1[start:end].tolist()]
            record["teacher_top1_ids"] = top_ids
            record["teacher_top1"] = token_strings(tokenizer, top_ids)
        mask = batch.loss_mask[i, start:end]
        if bool((mask == 0).any()):
            record["trained"] = [int(m > 0) for m in mask.tolist()]
        if batch.rewards is not None:
            record["reward"] = float(batch.rewards[i])
        if batch.truncated is not None:
            record["truncated"] = bool(batch.truncated[i])
        if end - start < int(lengths[i]) - int(batch.prompt_lengths[i]):
            record["cut_at_tokens"] = MAX_TOKENS
        records.append(record)
    return records


class SampleLog:
    """``samples.jsonl`` of a run directory: append, read, and truncate to a resumed step."""

    def __init__(self, run_path: str | Path):
        self.path = Path(run_path) / SAMPLES_FILE

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def read(self) -> list[dict]:
        return [r for r in read_records(self.path) if _is_sample(r)]

    def read_strict(self) -> list[dict]:
        """``read`` for a reader that shows the samples: a line that is not a JSON object is named (file and line)
        instead of skipped; only a last line torn by a kill mid-write, after good ones, is left out."""
        if not self.path.is_file():
            return []
        lines = self.path.read_bytes().splitlines()
        records = []
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # not UTF-8 or not JSON (both ValueErrors), or nested too deeply
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif number < len(lines) or not records:
                raise MentorError(
                    f"{self.path} is not valid JSON at line {number} (each line must be one JSON "
                    "object, as training writes them): the sample log is damaged; train the run "
                    "again to write it anew"
                )
        return [r for r in records if _is_sample(r)]

    def truncate(self, last_step: int) -> None:
        """Drop the records of steps after ``last_step`` (a resumed run writes them again, identically)."""
        truncate_records(self.path, last_step)


def _is_sample(record: dict) -> bool:
    return isinstance(record.get("tokens"), list)


def own_entries(run, *names: str) -> None:
    """Record report files as the run's own (so ``--overwrite`` may remove them) where the run keeps a record."""
    own = getattr(run, "own", None)
    if callable(own):
        own(*names)
