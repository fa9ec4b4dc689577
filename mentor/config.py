"""Typed, flat configs (dataclasses): defaults < YAML file < command-line flags, validated at the boundary."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field

import yaml

from mentor.errors import MentorError
from mentor.files import read_user_file
from mentor.algorithms.opd import DIVERGENCES
from mentor.update.losses import LOSSES
from mentor.update.optim import SCHEDULES


@dataclass
class TrainConfig:
    """What every recipe shares: run directory, batch shape, optimizer, LoRA, precision, cadence."""

    output_dir: str = "runs/mentor"
    seed: int = 0
    steps: int = 100
    batch_size: int = 16  # prompts per step (groups); each contributes group_size sequences
    group_size: int = 4
    micro_batch_size: int = 64  # sequences per forward/backward; gradients are accumulated
    num_substeps: int = 1  # optimizer steps per batch (the batch is split in this many parts)
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 32.0
    lora_target_modules: str = "all-linear"  # or a comma list, e.g. q_proj,v_proj
    dtype: str = "float32"  # float32 | bfloat16 (log-probs are float32 either way)
    save_every: int = 0  # checkpoint every N steps (0: only the final model)
    keep_checkpoints: int = 2
    eval_every: int = 0  # evaluate every N steps (0: only before and after)
    log_with: str = ""  # comma list of trackers: tensorboard, wandb, trackio
    max_bad_steps: int = 5  # stop after this many consecutive non-finite steps
    overwrite: bool = False  # allow reusing a run directory made with a different config
    resume: bool = False  # continue the run in output_dir (an error if it has no checkpoint)
    quiet: bool = False  # no progress bar
    progress_every: int = 10  # without a terminal (a log file, CI): a plain progress line every N steps
    sample_log_every: int = 10  # samples.jsonl: a few completions, token by token, every N steps (0: off)
    sample_log_rows: int = 4  # sequences per logged step

    def __post_init__(self) -> None:
        # every config is checked where it is made, from flags, YAML or Python alike: types first, then values
        check_field_types(self)
        self.validate()

    def validate(self) -> None:
        positive = ("steps", "batch_size", "group_size", "micro_batch_size", "num_substeps", "keep_checkpoints",
                    "max_bad_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise MentorError(f"--{_flag(name)} must be at least 1 (got {getattr(self, name)})")
        if not 0 <= self.seed < 2**32:
            raise MentorError(f"--seed must lie in 0..{2**32 - 1} (got {self.seed})")
        if not self.learning_rate > 0:
            raise MentorError(f"--learning-rate must be positive (got {self.learning_rate})")
        if self.learning_rate > 1:  # AdamW moves every weight by about this much per step: above 1 nothing trains
            raise MentorError(f"--learning-rate {self.learning_rate:g} is far too large (AdamW moves each weight by "
                              "about this much per step): use a value such as 1e-4")
        if self.lr_schedule not in SCHEDULES:
            raise MentorError(f"--lr-schedule {self.lr_schedule!r} is unknown: use {', '.join(SCHEDULES)}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise MentorError("--adam-beta1 and --adam-beta2 must lie in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise MentorError(f"--min-lr-ratio must lie in [0, 1] (got {self.min_lr_ratio})")
        if self.lora_rank < 0:
            raise MentorError(f"--lora-rank must be 0 (full fine-tuning) or positive (got {self.lora_rank})")
        if self.lora_rank and not self.lora_alpha > 0:
            raise MentorError(f"--lora-alpha must be positive (got {self.lora_alpha})")
        if self.lora_rank and not self.lora_targets:
            raise MentorError("--lora-target-modules is empty: name modules (e.g. q_proj,v_proj) or use all-linear")
        if self.dtype == "float16":
            raise MentorError("--dtype float16 cannot train (without loss scaling its gradients overflow to NaN): "
                              "use bfloat16 or float32")
        if self.dtype not in ("float32", "bfloat16"):
            raise MentorError(f"--dtype {self.dtype!r} is unknown: use float32 or bfloat16")
        if self.batch_size * self.group_size < self.num_substeps:
            raise MentorError("--num-substeps cannot exceed the number of sequences per step")
        for name in ("warmup_steps", "save_every", "eval_every", "max_grad_norm", "weight_decay",
                     "progress_every", "sample_log_every", "sample_log_rows"):
            if getattr(self, name) < 0:
                raise MentorError(f"--{_flag(name)} cannot be negative (got {getattr(self, name)})")
        unknown = [t for t in _comma_list(self.log_with) if t not in TRACKERS]
        if unknown:
            raise MentorError(f"--log-with {unknown[0]!r} is not a tracker: use a comma list of {', '.join(TRACKERS)}")
        if not self.output_dir.strip():
            raise MentorError("--output-dir is empty: name the run directory")

    @property
    def lora_targets(self) -> list[str] | str:
        t = self.lora_target_modules
        return t if t == "all-linear" else _comma_list(t)


TRACKERS = ("tensorboard", "wandb", "trackio", "aim", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab", "all")


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # 0 = off, so the recorded log-probs are those of the full tempered softmax
    top_p: float = 1.0
    max_prompt_tokens: int = 0  # 0: the model's context minus max_new_tokens
    long_prompts: str = "skip"  # skip (and count) or fail

    def validate_sampling(self) -> None:
        if self.max_new_tokens < 1:
            raise MentorError("--max-new-tokens must be at least 1")
        if self.max_prompt_tokens < 0:
            raise MentorError("--max-prompt-tokens cannot be negative (0: the model's context minus --max-new-tokens)")
        if not self.temperature > 0:
            raise MentorError("--temperature must be positive")
        if self.long_prompts not in ("skip", "fail"):
            raise MentorError("--long-prompts must be 'skip' or 'fail'")
        if self.top_k or self.top_p != 1.0:
            # the trainer's log-probs are the full tempered softmax; truncated sampling would record others
            raise MentorError("--top-k/--top-p cannot be used for training: the trainer's importance ratio uses "
                              "the full softmax at --temperature, so sample from it (lower --temperature instead)")


@dataclass
class DistillConfig(TrainConfig, SamplingConfig):
    """On-policy distillation (tinker-cookbook's defaults, tuned for stability on small models)."""

    student: str = ""
    teacher: str = ""
    prompts: str = ""  # JSONL with `prompt` or `messages`
    task: str = ""  # a built-in task for prompts/eval instead of a file (e.g. arithmetic)
    eval_size: int = 200
    chat_template: bool = False  # apply the tokenizer's chat template to plain `prompt` records
    kl_coef: float = 1.0
    kl_discount: float = 0.0
    # sampled: the sampled token's log q - log p as its advantage (any teacher); full: the exact reverse KL
    # over the vocabulary, differentiated (in-process teacher); top_k: the same over the kl_top_k likeliest
    divergence: str = "sampled"
    kl_top_k: int = 20
    reward_coef: float = 0.0  # add this times the (group-centred) task reward to every token's advantage
    loss: str = "importance_sampling"
    clip_ratio: float = 0.0  # > 0: PPO-style clipping of the importance ratio
    # --teacher may be a URL (http://host:port/v1): an OpenAI-compatible server (vLLM, SGLang, serve-teacher)
    teacher_tokenizer: str = ""  # remote teacher: its tokenizer (directory or hub id); default: ask the server
    teacher_api_key: str = ""  # remote teacher: bearer key (or $MENTOR_TEACHER_API_KEY); never written to disk
    teacher_timeout: float = 120.0  # remote teacher: seconds per request before a retry
    sampler: str = "hf"  # hf (transformers generate) | vllm (colocated engine, needs a GPU and mentor[vllm])
    vllm_gpu_memory_utilization: float = 0.3  # share of the GPU the colocated vLLM engine may take

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        if not self.student or not self.teacher:
            raise MentorError("distillation needs --student and --teacher (a model directory or hub id each)")
        if not self.prompts and not self.task:
            raise MentorError("distillation needs --prompts FILE.jsonl (or a built-in --task)")
        if self.loss not in LOSSES or self.loss == "cross_entropy":
            raise MentorError(f"--loss {self.loss!r} is unknown for distillation: use importance_sampling or ppo")
        if self.clip_ratio < 0 or not 0 <= self.kl_discount <= 1:
            raise MentorError("--clip-ratio must be >= 0 and --kl-discount in [0, 1]")
        check_clip(self.loss, self.clip_ratio, default=0.0)
        if self.eval_size < 1:
            raise MentorError(f"--eval-size must be at least 1 (got {self.eval_size})")
        if self.kl_coef < 0 or self.reward_coef < 0:
            raise MentorError("--kl-coef and --reward-coef cannot be negative: a negative weight inverts the "
                              "objective (the student would move away from the teacher or the reward)")
        if not self.kl_coef and not self.reward_coef:
            raise MentorError("--kl-coef 0 without --reward-coef leaves nothing to learn: raise --kl-coef")
        if self.reward_coef and not self.task:
            raise MentorError("--reward-coef needs a --task whose grader rewards the samples (or drop it)")
        if self.reward_coef and self.group_size < 2:
            raise MentorError("--reward-coef needs --group-size of at least 2: the reward is centred on its "
                              "group's mean, which one sample equals")
        if self.kl_top_k < 1:
            raise MentorError(f"--kl-top-k must be at least 1 (got {self.kl_top_k})")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise MentorError("--vllm-gpu-memory-utilization is a share of the GPU: it must lie in (0, 1]")
        if self.sampler not in ("hf", "vllm"):
            raise MentorError(f"--sampler {self.sampler!r} is unknown: use hf or vllm")
        if self.divergence not in DIVERGENCES:
            raise MentorError(f"--divergence {self.divergence!r} is unknown: use {', '.join(DIVERGENCES)}")
        if self.divergence == "top_k" and self.kl_top_k < 1:
            raise MentorError("--kl-top-k must be >= 1 with --divergence top_k")
        # top_k needs only the teacher's top-k log-probs, which a server returns (vLLM's prompt_logprobs=k)
        remote_only = self.teacher.startswith(("http://", "https://")) and self.divergence != "top_k"
        if self.divergence != "sampled" and (remote_only or "=" in self.teacher):
            raise MentorError(f"--divergence {self.divergence} needs the teacher's whole distribution, so one "
                              "in-process teacher: use --divergence sampled (or top_k, one server) with a server, "
                              "sampled with several teachers")
        if self.divergence != "sampled" and self.kl_discount:
            raise MentorError(f"--divergence {self.divergence} is a per-position loss: --kl-discount must be 0")
        if not self.teacher_timeout > 0:
            raise MentorError("--teacher-timeout must be positive (seconds)")


def check_clip(loss: str, clip_ratio: float, default: float) -> None:
    """PPO clipping needs a ratio, and a ratio does nothing without PPO: either alone is a silent no-op."""
    if loss == "ppo" and not clip_ratio > 0:
        raise MentorError("--loss ppo needs --clip-ratio above 0 (e.g. 0.2): with 0 nothing is clipped")
    if loss != "ppo" and clip_ratio not in (0.0, default):
        raise MentorError(f"--clip-ratio {clip_ratio} only acts with --loss ppo: add --loss ppo or drop it")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def finite_float(text: str) -> float:
    """argparse type for every float flag: a number, and not nan or inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def check_field_types(config) -> None:
    """Every field holds a value of its declared type (numbers finite); numbers written as text are converted.

    YAML gives strings for some numbers (``1e-3``), lists or mappings where text is expected, and nulls; Python
    callers can pass anything. Each is converted or refused here, once, with the field's name.
    """
    for f in dataclasses.fields(config):
        kind = _field_type(type(config), f)
        setattr(config, f.name, _typed(f.name, kind, getattr(config, f.name)))


def _typed(name: str, kind, value):
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if value is None:
        raise MentorError(f"config field {name} is empty (null): give it a value or leave it out")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise MentorError(f"config field {name} must be true or false (got {shown})")
    if kind is str:
        if isinstance(value, str):
            return value
        hint = ": write a comma list as one string, a,b" if isinstance(value, (list, tuple)) else ""
        raise MentorError(f"config field {name} must be text (got {type(value).__name__} {shown}){hint}")
    if kind in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip().replace("_", "")) if kind is float else _int_text(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            what = "a whole number" if kind is int else "a number"
            raise MentorError(f"config field {name} must be {what} (got {shown})")
        if not math.isfinite(number):
            raise MentorError(f"config field {name} must be a finite number (got {shown})")
        if kind is int:
            if number != int(number):
                raise MentorError(f"config field {name} must be a whole number (got {shown})")
            return int(number)
        return float(number)
    return value


def _int_text(text: str) -> int | float:
    text = text.strip().replace("_", "")
    try:
        return int(text)
    except ValueError:
        return float(text)  # "1e3" is a whole number written as a float: the int check above decides


def _field_type(cls, f: dataclasses.Field):
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    return hint


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` flag per config field. Unset flags stay absent so YAML values survive."""
    parser.add_argument("--config", help="YAML file with config fields (flags override it)")
    for f in dataclasses.fields(cls):
        kind = _field_type(cls, f)
        names = [f"--{_flag(f.name)}"]
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS)
        else:
            parser.add_argument(*names, dest=f.name, type=finite_float if kind is float else kind,
                                default=argparse.SUPPRESS, metavar=kind.__name__.upper())


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of fields; anything larger is not one


class _StrictLoader(yaml.SafeLoader):
    """YAML with one rule added: a key written twice is an error (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (a list); the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(f"{key!r} on line {first} and again on line {again}")
        self.key, self.first, self.again = key, first, again


def load_yaml_config(yaml_path: str) -> dict:
    """A config file's fields, or one line saying what is wrong with the file."""
    # bytes: PyYAML reads UTF-8 and, with a byte-order mark, UTF-16
    data = read_user_file(yaml_path, "config file", missing="check the --config path",
                          not_a_file="pass a .yaml file to --config", max_bytes=MAX_CONFIG_BYTES,
                          too_big="not a config: pass the YAML file of config fields")
    try:
        loaded = yaml.load(data, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise MentorError(f"config file {yaml_path!r} sets {exc}: keep one (YAML would silently use the "
                          "last)") from None
    except yaml.reader.ReaderError:
        raise MentorError(f"config file {yaml_path!r} is not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise MentorError(f"config file {yaml_path!r} is not valid YAML ({where}"
                          f"{getattr(exc, 'problem', None) or str(exc).splitlines()[0]}): fix the syntax there") from None
    except RecursionError:
        raise MentorError(f"config file {yaml_path!r} is nested too deeply to be a config: write field: value "
                          "lines") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise MentorError(f"config file {yaml_path!r} must hold a mapping of field: value")
    keys = [k for k in loaded if not isinstance(k, str)]
    if keys:
        raise MentorError(f"config file {yaml_path!r} has a key that is not a field name ({keys[0]!r}): "
                          "write field: value lines")
    return {k.replace("-", "_"): v for k, v in loaded.items()}


def build_config(cls, args: argparse.Namespace | None = None, yaml_path: str | None = None, **overrides):
    """Defaults < YAML < parsed flags < keyword overrides; unknown YAML keys are an error.

    The dataclass itself checks types and values (``__post_init__``), so a config built in Python is held to
    the same rules as one built here.
    """
    values: dict = {}
    yaml_path = yaml_path or (getattr(args, "config", None) if args is not None else None)
    if yaml_path:
        values.update(load_yaml_config(yaml_path))
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(cls)}})
    values.update(overrides)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else name
                 for name in unknown]
        raise MentorError(f"unknown config field(s) {', '.join(hints)} for {cls.__name__}: `--help` lists the fields")
    return cls(**values)


def config_to_dict(config) -> dict:
    """The config as plain data, secrets redacted (it is written to the run directory and to trackers)."""
    values = dataclasses.asdict(config)
    for name in SECRET_FIELDS & set(values):
        values[name] = "<redacted>" if values[name] else ""
    return values


SECRET_FIELDS = {"teacher_api_key"}


# Fields that change nothing about the result: a run directory may be resumed with different values.
NON_SEMANTIC_FIELDS = {"overwrite", "resume", "quiet", "log_with", "steps", "save_every", "keep_checkpoints", "eval_every",
                       "teacher_api_key", "teacher_timeout"}
# what is logged and shown changes no number of the run
NON_SEMANTIC_FIELDS |= {"progress_every", "sample_log_every", "sample_log_rows"}


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning / off-policy distillation on prompt+completion data."""

    model: str = ""
    data: str = ""  # JSONL: prompt+completion, or messages ending with an assistant turn
    task: str = ""  # or a built-in task's reference solutions
    train_size: int = 20000  # problems drawn from --task
    eval_size: int = 200
    max_new_tokens: int = 64  # for evaluation
    chat_template: bool = False
    max_prompt_tokens: int = 0
    long_prompts: str = "skip"
    # off-policy distillation: completions sampled from this teacher (cached in the run directory, paid once)
    from_teacher: str = ""
    teacher_samples: int = 1  # completions per prompt
    teacher_temperature: float = 1.0
    teacher_prompts: int = 0  # prompts to sample for (0: all of --data, or --train-size from --task)

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise MentorError("sft needs --model (a model directory or hub id)")
        if self.teacher_samples < 1 or not self.teacher_temperature > 0 or self.teacher_prompts < 0:
            raise MentorError("--teacher-samples must be at least 1, --teacher-temperature positive and "
                              "--teacher-prompts 0 (all) or more")
        teacher_flags = [f"--{_flag(n)}" for n, default in (("teacher_samples", 1), ("teacher_temperature", 1.0),
                                                             ("teacher_prompts", 0)) if getattr(self, n) != default]
        if teacher_flags and not self.from_teacher:
            raise MentorError(f"{', '.join(teacher_flags)} only act with --from-teacher TEACHER: add it or drop them")
        if not self.data and not self.task:
            raise MentorError("sft needs --data FILE.jsonl (or a built-in --task)")
        for name in ("max_new_tokens", "train_size", "eval_size"):
            if getattr(self, name) < 1:
                raise MentorError(f"--{_flag(name)} must be at least 1 (got {getattr(self, name)})")
        if self.max_prompt_tokens < 0:
            raise MentorError("--max-prompt-tokens cannot be negative (0: the model's context minus --max-new-tokens)")
        if self.long_prompts not in ("skip", "fail"):
            raise MentorError("--long-prompts must be 'skip' or 'fail'")


@dataclass
class RLConfig(TrainConfig, SamplingConfig):
    """On-policy RL with a grader's sequence reward (group baseline; GRPO with --normalize-std)."""

    model: str = ""
    prompts: str = ""  # JSONL with `prompt`/`messages` and an `answer` (or a loader's schema) for the grader
    task: str = ""  # a built-in task: prompts, grader and evaluation
    grader: str = ""  # exact | numeric | math | code | ifeval (default: the task's own)
    eval_size: int = 200
    chat_template: bool = False
    normalize_std: bool = False  # divide the group-centred reward by the group's std (GRPO)
    drop_constant_groups: bool = True  # groups whose samples all got the same reward carry no signal
    loss: str = "importance_sampling"
    clip_ratio: float = 0.2  # used with --loss ppo
    kl_coef: float = 0.0  # > 0: per-token KL penalty to --reference
    reference: str = ""  # reference model for the KL penalty (default: the initial --model)

    def validate(self) -> None:
        super().validate()
        self.validate_sampling()
        if not self.model:
            raise MentorError("rl needs --model (a model directory or hub id)")
        if not self.prompts and not self.task:
            raise MentorError("rl needs --prompts FILE.jsonl with answers (or a built-in --task)")
        if self.prompts and not self.task and not self.grader:
            raise MentorError("rl on --prompts needs --grader (exact, numeric, math, code or ifeval)")
        if self.loss not in ("importance_sampling", "ppo"):
            raise MentorError(f"--loss {self.loss!r} is unknown for rl: use importance_sampling or ppo")
        if self.clip_ratio < 0 or self.kl_coef < 0:
            raise MentorError("--clip-ratio and --kl-coef cannot be negative")
        check_clip(self.loss, self.clip_ratio, default=0.2)
        if self.reference and not self.kl_coef:
            raise MentorError("--reference only acts with --kl-coef above 0 (the KL penalty): add one or drop it")
        if self.eval_size < 1:
            raise MentorError(f"--eval-size must be at least 1 (got {self.eval_size})")
        if self.group_size < 2:
            raise MentorError("rl needs --group-size of at least 2 (the group mean is the baseline)")
