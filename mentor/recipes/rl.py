"""RL recipe: the student samples groups, a grader rewards each answer, group-baseline policy gradient."""

from __future__ import annotations

from mentor.algorithms.rl import ReinforcementLearning
from mentor.config import RLConfig
from mentor.data.prompts import ExampleStream
from mentor.errors import MentorError
from mentor.evaluation.accuracy import task_evaluator
from mentor.backends import check_teacher, close_sampler, engine_or_none, make_sampler
from mentor.train.ledger import ComputeLedger
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import file_examples, quiet_transformers, task_examples
from mentor.tasks.registry import get_task
from mentor.tasks.graders import get_grader
from mentor.train.run_dir import RunDirectory
from mentor.train.trainer import Trainer

PROGRESS_KEYS = ("reward", "accuracy", "constant_reward_groups", "completion_length", "grad_norm")


def run_rl(config: RLConfig, model=None, tokenizer=None, examples=None) -> tuple[Trainer, list[dict]]:
    quiet_transformers()
    RunDirectory(config.output_dir).check(config, config.overwrite, config.resume)  # before any work
    tokenizer = tokenizer or load_tokenizer(config.model)
    # the KL penalty's reference is frozen: the starting weights unless another model (or a server) is named;
    # its cheap checks come before any weights load
    load_reference = check_teacher(config.reference or config.model, config, tokenizer, "reference") \
        if config.kl_coef else None
    model = model or load_model(config.model, config.dtype)
    reference, reference_params = load_reference(model) if load_reference else (None, None)
    task = get_task(config.task) if config.task else None
    grader = get_grader(config.grader) if config.grader else task.grade
    if examples is None:
        if config.prompts:
            examples = file_examples(config.prompts, tokenizer, model, config)
            missing = sum(e.reference is None for e in examples)
            if missing:  # its groups would all score 0, be dropped, and the run would learn nothing
                raise MentorError(f"{missing} of {len(examples)} prompts in {config.prompts} have no 'answer' for "
                                  "the grader to check: give every RL record an answer")
        else:
            examples = task_examples(task, tokenizer, 50_000, config.seed, with_solution=False,
                                     chat_template=config.chat_template, model=model)
    sampler = make_sampler(config, model, tokenizer, config.model)
    algorithm = ReinforcementLearning(
        sampler, tokenizer, grader, group_size=config.group_size,
        temperature=config.temperature, normalize_std=config.normalize_std,
        kl_coef=config.kl_coef, reference=reference, drop_constant_groups=config.drop_constant_groups,
        clip_ratio=config.clip_ratio, tis_cap=config.tis_cap)
    evaluator = (task_evaluator(task, tokenizer, config.eval_size, config.max_new_tokens,
                                chat_template=config.chat_template, sampler=engine_or_none(config, sampler))
                 if task else None)
    ledger = ComputeLedger(reference_params=reference_params)  # None for a served reference: size unknown
    stream = ExampleStream(examples, config.batch_size, seed=config.seed)
    trainer = Trainer(config, model, tokenizer, stream, evaluator, progress_keys=PROGRESS_KEYS, ledger=ledger)
    try:
        history = trainer.train(algorithm)
    finally:
        close_sampler(sampler)
    trainer.save_final()
    return trainer, history
