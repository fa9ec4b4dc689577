"""Backends from configuration: who grades the tokens (a teacher, a reference) and who writes them (a sampler).

A recipe names a spec and gets a ``Teacher`` back, whatever sits behind it:

- a model directory, a ``.gguf`` file or a hub id: a ``LocalTeacher`` (in-process, same device as the student);
- a URL (``http://host:port/v1``): an ``HTTPTeacher`` (vLLM, SGLang or ``mentor serve-teacher``);
- ``name=SPEC,name=SPEC``: a ``TeacherPerSource``, one of the above per data set.

and names a sampler (``hf`` or ``vllm``) and gets a ``Sampler``. Algorithms never see which one it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from mentor.config import named_paths
from mentor.evaluation.flops import MatmulParams
from mentor.models.chat import describe_differences, stop_token_ids
from mentor.models.loading import (
    check_heads_cover_vocabulary,
    check_same_vocabulary,
    context_length,
    load_model,
    load_tokenizer,
)
from mentor.sample.base import Sampler
from mentor.score.base import Teacher
from mentor.score.http import HTTPTeacher, is_url, remote_teacher_tokenizer
from mentor.score.local import LocalTeacher
from mentor.score.per_source import TeacherPerSource

logger = logging.getLogger(__name__)
API_KEY_ENV = "MENTOR_TEACHER_API_KEY"


class LoadedTeacher(NamedTuple):
    teacher: Teacher | TeacherPerSource
    # the compute ledger's teacher size (weights of its matrix multiplies); None where it is not known here
    # (a server) or is counted per data set (TeacherPerSource reports its own FLOPs)
    matmul_params: int | None


TeacherLoader = Callable[[nn.Module], LoadedTeacher]


def make_teacher(spec: str, config, tokenizer, student: nn.Module, what: str = "teacher") -> LoadedTeacher:
    """The teacher (or reference) ``spec`` names, checked against the student's tokenizer and model."""
    return check_teacher(spec, config, tokenizer, what)(student)


def check_teacher(spec: str, config, tokenizer, what: str = "teacher") -> TeacherLoader:
    """The cheap checks of ``make_teacher`` (vocabularies, a server's tokenizer) before any weights load.

    Returns the function that loads the teacher next to the student, once the student is loaded: a
    vocabulary mismatch fails in seconds, not after two models have been read.
    """
    sources = named_paths(spec)
    if sources is not None:
        return _check_per_source(sources, config, tokenizer, what)
    if is_url(spec):
        scorer = remote_teacher(spec, config, tokenizer, what)
        return lambda student: LoadedTeacher(scorer, None)
    teacher_tokenizer = load_tokenizer(spec, what)
    check_same_vocabulary(tokenizer, teacher_tokenizer)
    return lambda student: local_teacher(
        load_model(spec, config.dtype, what=what), config, tokenizer, student, teacher_tokenizer, what
    )


def _check_per_source(sources: dict[str, str], config, tokenizer, what: str) -> TeacherLoader:
    loaders = {name: check_teacher(path, config, tokenizer, f"{what} {name!r}") for name, path in sources.items()}

    def load(student: nn.Module) -> LoadedTeacher:
        loaded = {name: load_one(student) for name, load_one in loaders.items()}
        params = {name: one.matmul_params for name, one in loaded.items() if one.matmul_params is not None}
        return LoadedTeacher(TeacherPerSource({name: one.teacher for name, one in loaded.items()}, params), None)

    return load


def local_teacher(
    model: nn.Module, config, tokenizer, student: nn.Module, teacher_tokenizer, what: str = "teacher"
) -> LoadedTeacher:
    """A loaded model as an in-process teacher on the student's device, after the checks that need weights."""
    check_heads_cover_vocabulary(tokenizer, student, model)
    report_turn_differences(tokenizer, student, teacher_tokenizer, model, what)
    model = model.to(student.device)
    return LoadedTeacher(
        LocalTeacher(model, tokenizer.pad_token_id, config.micro_batch_size), MatmulParams.of(model).total
    )


def remote_teacher(url: str, config, tokenizer, what: str = "teacher") -> HTTPTeacher:
    """A server at ``url`` as a teacher (or ``what``), its vocabulary checked against the student's before any work."""
    scorer = HTTPTeacher(
        url,
        api_key=config.teacher_api_key or os.environ.get(API_KEY_ENV),
        timeout=config.teacher_timeout,
        batch_size=config.micro_batch_size,
        role=what,
    )
    check_same_vocabulary(tokenizer, remote_teacher_tokenizer(scorer, config.teacher_tokenizer))
    return scorer


def report_turn_differences(tokenizer, student, teacher_tokenizer, teacher, what: str = "teacher") -> None:
    """Say, before any work, where teacher and student disagree on how a chat turn is written and ended."""
    for problem in describe_differences(
        tokenizer, teacher_tokenizer, stop_token_ids(tokenizer, student), stop_token_ids(teacher_tokenizer, teacher)
    ):
        logger.warning(f"warning: {what} and student: {problem}")


def make_sampler(
    config, model: nn.Module, tokenizer, model_path: str, temperature: float | None = None, multi_turn: bool = True
) -> Sampler:
    """``config.sampler``: ``hf`` (transformers ``generate``) or ``vllm`` (a colocated engine, CUDA or CPU build,
    fed ``model``'s weights whenever they changed). ``temperature`` defaults to ``config.temperature``; the configs
    refuse top-k/top-p for training, so both samplers draw from the full tempered softmax. ``close_sampler``
    releases it. ``config.env`` wraps it in a ``MultiTurnSampler`` (docs/multi_turn.md)."""
    temperature = config.temperature if temperature is None else temperature
    if multi_turn and getattr(config, "env", ""):  # multi-turn: the environment answers each turn the sampler writes
        from mentor.envs import get_env
        from mentor.sample.multi_turn import MultiTurnSampler

        single = make_sampler(config, model, tokenizer, model_path, temperature, multi_turn=False)
        return MultiTurnSampler(
            single,
            tokenizer,
            get_env(config.env),
            config.max_turns,
            config.max_new_tokens,
            engine_context(model, config),
            model,
        )
    if config.sampler == "vllm":
        from mentor.sample.vllm import VLLMSampler

        return VLLMSampler(
            model,
            tokenizer,
            model_path,
            config.max_new_tokens,
            temperature,
            dtype=config.dtype,
            seed=config.seed,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            max_model_len=engine_context(model, config),
            enforce_eager=config.vllm_enforce_eager,
        )
    from mentor.sample.hf import HFSampler

    return HFSampler(model, tokenizer, config.max_new_tokens, temperature, batch_size=config.micro_batch_size)


def engine_context(model: nn.Module, config) -> int | None:
    """The longest sequence an engine must hold: --max-prompt-tokens plus --max-new-tokens when given (a KV
    cache sized for a long-context model's full window would not fit a CPU's memory), else the model's context."""
    if getattr(config, "max_prompt_tokens", 0):
        return config.max_prompt_tokens + config.max_new_tokens
    return context_length(model)


def engine_or_none(config, sampler: Sampler) -> Sampler | None:
    """The training sampler when it is an engine that greedy evaluation should reuse (vLLM), else None."""
    return sampler if config.sampler == "vllm" else None


def close_sampler(sampler) -> None:
    """Stop a sampler's engine, if it has one (vLLM's holds memory and, for a GGUF model, a weights directory)."""
    close = getattr(sampler, "close", None)
    if close is not None:
        close()
