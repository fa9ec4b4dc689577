"""On-policy distillation recipe: load student and teacher, check vocabularies, build the loop, train."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

from torch import nn

from mentor.algorithms.opd import OnPolicyDistillation
from mentor.backends import LoadedTeacher, check_teacher, local_teacher, make_sampler
from mentor.check import startup_check
from mentor.config import DistillConfig, named_paths
from mentor.data.prompts import TeacherPrompts, read_context
from mentor.errors import MentorError
from mentor.models.loading import check_same_vocabulary, context_length, load_tokenizer
from mentor.recipes.builder import Parts, Recipe, run_recipe
from mentor.recipes.common import file_examples, task_examples
from mentor.score.http import HTTPTeacher, is_url, remote_teacher_tokenizer
from mentor.score.local import LocalTeacher
from mentor.train.ledger import ComputeLedger
from mentor.train.trainer import Trainer

SELF_TEACHER = "self"  # --teacher self: a frozen copy of the student's starting weights

PROGRESS_KEYS = (
    "reverse_kl",
    "full_reverse_kl",
    "generalized_jsd",
    "accuracy",
    "entropy",
    "completion_length",
    "grad_norm",
)


def run_distill(
    config: DistillConfig, student=None, tokenizer=None, teacher=None, teacher_tokenizer=None, examples=None
) -> tuple[Trainer, list[dict]]:
    """Distil ``config.student`` from ``config.teacher``. From Python, ``teacher`` may be a loaded model (with
    ``teacher_tokenizer``) or a ready ``Teacher``; ``examples`` replace the prompts."""

    checked = []  # mentor check's loader: its report runs before training (below)

    def check(tokenizer):  # the cheap checks first: a vocabulary mismatch must fail before any model weights load
        if teacher is None and config.teacher == SELF_TEACHER:
            # a frozen copy of the starting weights: a fixed target (SDFT, OPSD), not one that moves with the student
            return lambda student: local_teacher(copy.deepcopy(student), config, tokenizer, student, tokenizer)
        if teacher is None:  # mentor check's cheap checks now, the rest before training (--no-check: none)
            checked.extend(filter(None, [startup_check(config, tokenizer)]))
            return checked[0] if checked else check_teacher(config.teacher, config, tokenizer)
        return _given_teacher(teacher, teacher_tokenizer, config, tokenizer)

    def before_training(parts: Parts) -> None:  # every input checked, nothing written yet: the measured checks
        for loader in checked:
            loader.report()

    def distill_examples(parts: Parts) -> list:
        scorer = parts.teacher.teacher
        spec = config.teacher if teacher is None else None  # a teacher given from Python brings its tokenizer
        if named_paths(config.teacher) is not None:
            return _examples_per_source(config, parts.tokenizer, parts.model, scorer)
        prompts = teacher_prompts(config, spec, scorer, parts.tokenizer, teacher_tokenizer)
        if config.prompts:
            return file_examples(config.prompts, parts.tokenizer, parts.model, config, teacher=prompts)
        return task_examples(
            parts.task,
            parts.tokenizer,
            50_000,
            config.seed,
            with_solution=False,
            chat_template=config.chat_template,
            model=parts.model,
            teacher=prompts,
        )

    def algorithm(parts: Parts) -> OnPolicyDistillation:
        return OnPolicyDistillation(
            parts.sampler,
            parts.teacher.teacher,
            parts.tokenizer,
            group_size=config.group_size,
            temperature=config.temperature,
            kl_coef=config.kl_coef,
            kl_discount=config.kl_discount,
            reward_coef=config.reward_coef,
            grader=parts.task.grade if parts.task else None,
            divergence=config.divergence,
            kl_top_k=config.kl_top_k,
            jsd_beta=config.jsd_beta,
            clip_ratio=config.clip_ratio,
            tis_cap=config.tis_cap,
        )

    recipe = Recipe(
        config.student,
        distill_examples,
        algorithm,
        PROGRESS_KEYS,
        what="student",
        check=check,
        sampler=lambda parts: make_sampler(config, parts.model, parts.tokenizer, config.student),
        # a remote teacher's size is unknown here: its tokens are still counted, its FLOPs are not
        ledger=lambda parts: ComputeLedger(teacher_params=parts.teacher.matmul_params),
        teacher_in_samples=True,
        before_training=before_training,
    )
    return run_recipe(config, recipe, student, tokenizer, examples)


def _given_teacher(teacher, teacher_tokenizer, config: DistillConfig, tokenizer):
    """A teacher passed from Python: a loaded model (checked like one loaded here) or a ready ``Teacher``."""
    if not isinstance(teacher, nn.Module):
        return lambda student: LoadedTeacher(teacher, None)
    teacher_tokenizer = teacher_tokenizer or load_tokenizer(config.teacher, "teacher")
    check_same_vocabulary(tokenizer, teacher_tokenizer)
    return lambda student: local_teacher(teacher, config, tokenizer, student, teacher_tokenizer)


def _examples_per_source(config: DistillConfig, tokenizer, student, scorer) -> list:
    """One teacher per data set (``--teacher math=A,code=B --prompts math=F1,code=F2``, names checked by the
    config): each prompt carries its data set's name, whose teacher grades its rollouts."""
    specs = named_paths(config.teacher)
    return [
        replace(e, source=name)
        for name, path in named_paths(config.prompts).items()
        for e in file_examples(
            path,
            tokenizer,
            student,
            config,
            teacher=teacher_prompts(config, specs[name], scorer.teachers[name], tokenizer),
        )
    ]


def teacher_prompts(
    config: DistillConfig, spec: str | None, scorer, tokenizer, teacher_tokenizer=None
) -> TeacherPrompts:
    """How the teacher named ``spec`` (serving as ``scorer``) gets its own prompts: its tokenizer renders them
    (its chat template may differ from the student's; loaded only if a teacher prompt needs it), its context
    bounds them. ``spec`` None: a teacher given from Python, with ``teacher_tokenizer`` or the student's."""
    context = read_context(config.teacher_context) if config.teacher_context else None
    context_tokens = None
    if isinstance(scorer, LocalTeacher):
        context_tokens = context_length(scorer.model)
    elif isinstance(scorer, HTTPTeacher):
        with contextlib.suppress(MentorError):  # vLLM and serve-teacher say it; other servers refuse long prompts
            context_tokens = scorer.model_info().get("max_model_len")
    if teacher_tokenizer is None and spec and spec != SELF_TEACHER:
        teacher_tokenizer = (
            (lambda: remote_teacher_tokenizer(scorer, config.teacher_tokenizer))
            if is_url(spec)
            else (lambda: load_tokenizer(spec, "teacher"))
        )
    limit = context_tokens - config.max_new_tokens if isinstance(context_tokens, int) else None
    return TeacherPrompts(teacher_tokenizer or tokenizer, context, config.teacher_context_template, limit)
