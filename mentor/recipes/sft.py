"""SFT recipe: tokens from data, cross-entropy on completion tokens."""

from __future__ import annotations

from mentor.algorithms.sft import SupervisedFineTuning
from mentor.config import SFTConfig
from mentor.data.prompts import ExampleStream, encode_examples, load_examples
from mentor.evaluation.accuracy import task_evaluator
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import prompt_limit, quiet_transformers, task_examples
from mentor.tasks.base import get_task
from mentor.train.trainer import Trainer


def run_sft(config: SFTConfig, model=None, tokenizer=None, examples=None) -> tuple[Trainer, list[dict]]:
    quiet_transformers()
    tokenizer = tokenizer or load_tokenizer(config.model)
    model = model or load_model(config.model, config.dtype)
    task = get_task(config.task) if config.task else None
    if examples is None:
        if config.data:
            raw = load_examples(config.data, need_completion=True)
            limit = prompt_limit(model, config.max_prompt_tokens, config.max_new_tokens)
            examples, _ = encode_examples(tokenizer, raw, use_chat_template=config.chat_template,
                                          max_prompt_tokens=limit, long_prompts=config.long_prompts,
                                          need_completion=True)
        else:
            examples = task_examples(task, tokenizer, config.train_size, config.seed)
    evaluator = task_evaluator(task, tokenizer, config.eval_size, config.max_new_tokens) if task else None
    stream = ExampleStream(examples, config.batch_size, seed=config.seed)
    trainer = Trainer(config, model, tokenizer, stream, evaluator, progress_keys=("loss", "accuracy"))
    history = trainer.train(SupervisedFineTuning(tokenizer.pad_token_id))
    trainer.save_final()
    return trainer, history
