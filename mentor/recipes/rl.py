"""RL recipe: the student samples groups, a grader rewards each answer, group-baseline policy gradient."""

from __future__ import annotations

from mentor.algorithms.rl import ReinforcementLearning
from mentor.backends import check_teacher, make_sampler
from mentor.config import RLConfig
from mentor.errors import MentorError
from mentor.recipes.builder import Parts, Recipe, run_recipe
from mentor.recipes.common import file_examples, task_examples
from mentor.tasks.graders import get_grader
from mentor.train.ledger import ComputeLedger
from mentor.train.trainer import Trainer

PROGRESS_KEYS = ("reward", "accuracy", "constant_reward_groups", "completion_length", "grad_norm")


def run_rl(config: RLConfig, model=None, tokenizer=None, examples=None) -> tuple[Trainer, list[dict]]:
    grader = get_grader(config.grader) if config.grader else None  # else the task's own

    def check_reference(tokenizer):
        # the KL penalty's reference is frozen: the starting weights unless another model (or a server) is named
        return (
            check_teacher(config.reference or config.model, config, tokenizer, "reference") if config.kl_coef else None
        )

    def algorithm(parts: Parts) -> ReinforcementLearning:
        return ReinforcementLearning(
            parts.sampler,
            parts.tokenizer,
            grader or parts.task.grade,
            group_size=config.group_size,
            temperature=config.temperature,
            normalize_std=config.normalize_std,
            kl_coef=config.kl_coef,
            reference=parts.teacher.teacher,
            drop_constant_groups=config.drop_constant_groups,
            clip_ratio=config.clip_ratio,
            tis_cap=config.tis_cap,
        )

    recipe = Recipe(
        config.model,
        lambda parts: rl_examples(config, parts),
        algorithm,
        PROGRESS_KEYS,
        check=check_reference,
        sampler=lambda parts: make_sampler(config, parts.model, parts.tokenizer, config.model),
        # None for a served reference: size unknown
        ledger=lambda parts: ComputeLedger(reference_params=parts.teacher.matmul_params),
    )
    return run_recipe(config, recipe, model, tokenizer, examples)


def rl_examples(config: RLConfig, parts: Parts) -> list:
    if not config.prompts:
        return task_examples(
            parts.task,
            parts.tokenizer,
            50_000,
            config.seed,
            with_solution=False,
            chat_template=config.chat_template,
            model=parts.model,
        )
    examples = file_examples(config.prompts, parts.tokenizer, parts.model, config)
    missing = sum(e.reference is None for e in examples)
    if missing:  # its groups would all score 0, be dropped, and the run would learn nothing
        raise MentorError(
            f"{missing} of {len(examples)} prompts in {config.prompts} have no 'answer' for the "
            "grader to check: give every RL record an answer"
        )
    return examples
