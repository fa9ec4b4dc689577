"""The skeleton every recipe shares, in one order; a recipe (``Recipe``) says only what differs.

    run-directory check -> tokenizer -> the teacher's (reference's) cheap checks -> model -> teacher
    -> examples -> sampler -> algorithm -> evaluator -> stream, ledger, trainer -> train -> final model

The cheap checks come before any weights load (a vocabulary mismatch fails in seconds); the sampler is
closed (a vLLM engine's memory) whether training ends or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from mentor.backends import LoadedTeacher, TeacherLoader, close_sampler, engine_or_none
from mentor.data.prompts import EncodedExample, ExampleStream
from mentor.evaluation.accuracy import task_evaluator
from mentor.models.loading import check_lora_targets, is_peft, load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.sample.base import Sampler
from mentor.tasks.base import Task
from mentor.tasks.registry import get_task
from mentor.train.callbacks import standard_callbacks
from mentor.train.ledger import ComputeLedger
from mentor.train.run_dir import RunDirectory
from mentor.train.trainer import Algorithm, Trainer


@dataclass
class Parts:
    """What the builder has made when the recipe is asked for its examples, its algorithm and its ledger."""

    config: object
    tokenizer: object
    model: nn.Module
    task: Task | None
    teacher: LoadedTeacher  # the teacher (or reference) and its size; (None, None) where the recipe has none
    sampler: Sampler | None = None


@dataclass
class Recipe:
    """What one recipe says.

    ``path``: the model trained (and its tokenizer), named ``what`` in errors. ``check``: the teacher's (or
    reference's) cheap checks, given the tokenizer, before any weights load; returns the loader of it, given
    the model (None: the recipe has none). ``sampler``: who writes the model's tokens (on-policy recipes; the
    evaluation reuses a vLLM engine). ``teacher_in_samples``: the sample log asks the teacher (if it is
    in-process) for its preferred tokens."""

    path: str
    examples: Callable[[Parts], list[EncodedExample]]
    algorithm: Callable[[Parts], Algorithm]
    progress_keys: tuple[str, ...]
    what: str = "model"
    check: Callable[[object], TeacherLoader | None] | None = None
    sampler: Callable[[Parts], Sampler] | None = None
    ledger: Callable[[Parts], ComputeLedger] = field(default=lambda parts: ComputeLedger())
    teacher_in_samples: bool = False
    before_training: Callable[[Parts], None] | None = None  # after the input checks, before the trainer wraps the model


def run_recipe(
    config, recipe: Recipe, model: nn.Module | None = None, tokenizer=None, examples: list[EncodedExample] | None = None
) -> tuple[Trainer, list[dict]]:
    """Build what ``recipe`` says, train, save the final model. ``model``, ``tokenizer`` and ``examples``, given
    from Python, replace what the recipe would load or make."""
    quiet_transformers()
    RunDirectory(config.output_dir).check(config, config.overwrite, config.resume)  # before any work
    tokenizer = tokenizer or load_tokenizer(recipe.path, recipe.what)
    load_teacher = recipe.check(tokenizer) if recipe.check else None
    model = model or load_model(recipe.path, config.dtype, what=recipe.what)
    teacher = load_teacher(model) if load_teacher is not None else LoadedTeacher(None, None)
    parts = Parts(config, tokenizer, model, get_task(config.task) if config.task else None, teacher)
    examples = recipe.examples(parts) if examples is None else examples
    parts.sampler = recipe.sampler(parts) if recipe.sampler else None
    algorithm = recipe.algorithm(parts)
    evaluator = (
        task_evaluator(
            parts.task,
            tokenizer,
            config.eval_size,
            config.max_new_tokens,
            chat_template=config.chat_template,
            sampler=engine_or_none(config, parts.sampler) if parts.sampler else None,
        )
        if parts.task
        else None
    )
    stream = ExampleStream(examples, config.batch_size, seed=config.seed)
    callbacks = standard_callbacks(teacher=parts.teacher.teacher if recipe.teacher_in_samples else None)
    try:
        if getattr(config, "lora_rank", 0) > 0 and not is_peft(model):  # the trainer's refusal, said first
            check_lora_targets(model, config.lora_targets)
        if recipe.before_training is not None:  # every input checked, the model not yet wrapped or sharded
            recipe.before_training(parts)
        trainer = Trainer(
            config,
            model,
            tokenizer,
            stream,
            evaluator,
            progress_keys=recipe.progress_keys,
            ledger=recipe.ledger(parts),
            callbacks=callbacks,
        )
        history = trainer.train(algorithm)
    finally:
        close_sampler(parts.sampler)
    trainer.save_final()
    return trainer, history
