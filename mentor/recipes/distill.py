"""On-policy distillation recipe: load student and teacher, check vocabularies, build the loop, train."""

from __future__ import annotations

import os
import re
from dataclasses import replace

from mentor.algorithms.opd import OnPolicyDistillation, TeacherPerSource
from mentor.config import DistillConfig
from mentor.data.prompts import ExampleStream
from mentor.errors import MentorError
from mentor.evaluation.accuracy import task_evaluator
from mentor.evaluation.flops import MatmulParams
from mentor.train.ledger import ComputeLedger
from mentor.models.chat import describe_differences, stop_token_ids
from mentor.models.loading import check_heads_cover_vocabulary, check_same_vocabulary, load_model, load_tokenizer
from mentor.recipes.common import file_examples, quiet_transformers, task_examples
from mentor.sample.hf import HFSampler
from mentor.score.http import HTTPTeacher, is_url, remote_teacher_tokenizer
from mentor.score.local import LocalTeacher
from mentor.tasks.registry import get_task
from mentor.train.run_dir import RunDirectory
from mentor.train.trainer import Trainer

API_KEY_ENV = "MENTOR_TEACHER_API_KEY"
PROGRESS_KEYS = ("reverse_kl", "full_reverse_kl", "accuracy", "entropy", "completion_length", "grad_norm")


def run_distill(config: DistillConfig, student=None, tokenizer=None, teacher=None, teacher_tokenizer=None,
                examples=None) -> tuple[Trainer, list[dict]]:
    quiet_transformers()
    RunDirectory(config.output_dir).check(config, config.overwrite, config.resume)  # before any work
    teachers = named_paths(config.teacher)
    if teachers is not None and teacher is None:
        return _run_multi_teacher(config, teachers, student, tokenizer)
    # the cheap checks first: a vocabulary mismatch must fail before any model weights load
    tokenizer = tokenizer or load_tokenizer(config.student, "student")
    if isinstance(teacher, TeacherPerSource):  # checked and loaded by _run_multi_teacher
        scorer = teacher
        student = student or load_model(config.student, config.dtype, what="student")
    elif teacher is None and is_url(config.teacher):
        scorer, remote_tokenizer = _remote_teacher(config, config.teacher, teacher_tokenizer is None)
        check_same_vocabulary(tokenizer, teacher_tokenizer or remote_tokenizer)
        student = student or load_model(config.student, config.dtype, what="student")
    else:
        teacher_tokenizer = teacher_tokenizer or load_tokenizer(config.teacher, "teacher")
        check_same_vocabulary(tokenizer, teacher_tokenizer)
        student = student or load_model(config.student, config.dtype, what="student")
        teacher = teacher or load_model(config.teacher, config.dtype, what="teacher")
        check_heads_cover_vocabulary(tokenizer, student, teacher)
        report_turn_differences(tokenizer, student, teacher_tokenizer, teacher)
        scorer = LocalTeacher(teacher.to(student.device), tokenizer.pad_token_id, config.micro_batch_size)

    task = get_task(config.task) if config.task else None
    if examples is None:
        if config.prompts:
            examples = file_examples(config.prompts, tokenizer, student, config)
        else:
            examples = task_examples(task, tokenizer, 50_000, config.seed, with_solution=False,
                                     chat_template=config.chat_template, model=student)
    algorithm = OnPolicyDistillation(
        _sampler(config, student, tokenizer), scorer, tokenizer,
        group_size=config.group_size, temperature=config.temperature, kl_coef=config.kl_coef,
        kl_discount=config.kl_discount, loss=config.loss, reward_coef=config.reward_coef,
        grader=task.grade if task else None, divergence=config.divergence, kl_top_k=config.kl_top_k,
        clip_ratio=config.clip_ratio if config.loss == "ppo" else 0.0)  # --clip-ratio acts with --loss ppo
    evaluator = (task_evaluator(task, tokenizer, config.eval_size, config.max_new_tokens,
                                chat_template=config.chat_template) if task else None)
    stream = ExampleStream(examples, config.batch_size, seed=config.seed)
    # a remote teacher's size is unknown here: its tokens are still counted, its FLOPs are not
    single_local = teacher is not None and not isinstance(teacher, TeacherPerSource)
    ledger = ComputeLedger(teacher_params=MatmulParams.of(teacher).total if single_local else None)
    trainer = Trainer(config, student, tokenizer, stream, evaluator, progress_keys=PROGRESS_KEYS, ledger=ledger)
    history = trainer.train(algorithm)
    trainer.save_final()
    return trainer, history


def report_turn_differences(tokenizer, student, teacher_tokenizer, teacher, what: str = "teacher") -> None:
    """Say, before any work, where teacher and student disagree on how a chat turn is written and ended."""
    from mentor.train.progress import console

    for problem in describe_differences(tokenizer, teacher_tokenizer, stop_token_ids(tokenizer, student),
                                        stop_token_ids(teacher_tokenizer, teacher)):
        console.print(f"[yellow]warning: {what} and student: {problem}[/]")


def named_paths(spec: str) -> dict[str, str] | None:
    """``math=/models/a,code=/models/b`` -> {name: path}; None for a single path or URL."""
    if not re.fullmatch(r"\w+=[^,]+(,\w+=[^,]+)*", spec or ""):
        return None
    return dict(part.split("=", 1) for part in spec.split(","))


def _run_multi_teacher(config: DistillConfig, teachers: dict[str, str], student, tokenizer):
    """One teacher per data set (``--teacher math=A,code=B --prompts math=F1,code=F2``).

    Each teacher is a model directory / hub id (loaded here) or a URL (a server: its FLOPs are not counted).
    """
    files = named_paths(config.prompts)
    if files is None or set(files) != set(teachers):
        raise MentorError("with one teacher per data set, --prompts must name the same data sets: "
                          f"--prompts {','.join(f'{n}=FILE' for n in teachers)}")
    tokenizer = tokenizer or load_tokenizer(config.student, "student")
    student = student or load_model(config.student, config.dtype, what="student")
    scorers, params = {}, {}
    for name, path in teachers.items():
        if is_url(path):
            scorers[name], remote_tokenizer = _remote_teacher(config, path)
            check_same_vocabulary(tokenizer, remote_tokenizer)
            continue
        check_same_vocabulary(tokenizer, load_tokenizer(path, f"teacher {name!r}"))
        model = load_model(path, config.dtype, what=f"teacher {name!r}").to(student.device)
        check_heads_cover_vocabulary(tokenizer, student, model)
        report_turn_differences(tokenizer, student, tokenizer, model, f"teacher {name!r}")
        scorers[name] = LocalTeacher(model, tokenizer.pad_token_id, config.micro_batch_size)
        params[name] = MatmulParams.of(model).total
    examples = []
    for name, path in files.items():
        examples += [replace(e, source=name) for e in file_examples(path, tokenizer, student, config)]
    return run_distill(config, student, tokenizer, teacher=TeacherPerSource(scorers, params),
                       teacher_tokenizer=tokenizer, examples=examples)


def _remote_teacher(config: DistillConfig, url: str, needs_tokenizer: bool = True):
    """An HTTP teacher at ``url`` and (if asked) its tokenizer, for the vocabulary check."""
    scorer = HTTPTeacher(url, api_key=config.teacher_api_key or os.environ.get(API_KEY_ENV),
                         timeout=config.teacher_timeout, batch_size=config.micro_batch_size)
    return scorer, remote_teacher_tokenizer(scorer, config.teacher_tokenizer) if needs_tokenizer else None


def _sampler(config: DistillConfig, student, tokenizer):
    if config.sampler == "vllm":
        from mentor.sample.vllm import VLLMSampler

        return VLLMSampler(student, tokenizer, config.student, config.max_new_tokens, config.temperature,
                           config.top_k, config.top_p, dtype=config.dtype, seed=config.seed,
                           gpu_memory_utilization=config.vllm_gpu_memory_utilization)
    return HFSampler(student, tokenizer, config.max_new_tokens, config.temperature, config.top_k, config.top_p,
                     batch_size=config.micro_batch_size)
