"""Typed, flat configs (dataclasses): defaults < YAML file < command-line flags, validated at the boundary.

A section (``TrainConfig``, ``TaskConfig``, ...) is a dataclass of fields with ``check_own`` for their rules; a
recipe's config lists its sections as bases (dataclasses merge their fields into one flat class, so
``config.learning_rate`` reads as ever) and adds its own fields and rules. Flags and YAML are argparse and
PyYAML; why no config library: docs/configuration.md."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field

import yaml

from mentor.data.prompts import DEFAULT_CONTEXT_TEMPLATE, check_context_template
from mentor.errors import MentorError
from mentor.files import is_url, read_user_file
from mentor.update.optim import AUTO_WARMUP, SCHEDULES
from mentor.weigh.divergences import DIVERGENCES, TEACHER_LOGPROBS, TEACHER_MODEL


def setting(default, help: str):
    """A config field with its documentation: ``--help`` shows ``help`` next to the default."""
    return field(default=default, metadata={"help": help})


def redefault(section: type, name: str, default):
    """``section``'s field ``name`` with another default for one recipe: documented once, in ``section``."""
    return field(default=default, metadata=section.__dataclass_fields__[name].metadata)


@dataclass
class TrainConfig:
    """Training: run directory, batch shape, optimizer, LoRA, precision, cadence."""

    output_dir: str = setting("runs/mentor", "the run directory (config, metrics, checkpoints, final model)")
    seed: int = setting(0, "fixes data order, sampling and initialisation (0..2^32-1)")
    steps: int = setting(100, "optimizer batches to train")
    batch_size: int = setting(16, "prompts per step (groups); each contributes --group-size sequences")
    group_size: int = setting(4, "sequences per prompt")
    micro_batch_size: int = setting(64, "sequences per forward/backward; gradients are accumulated")
    num_substeps: int = setting(1, "optimizer steps per batch (the batch is split in this many parts)")
    learning_rate: float = setting(1e-4, "peak learning rate of AdamW")
    lr_schedule: str = setting("constant", "learning-rate schedule after warmup: constant, linear or cosine")
    warmup_steps: int = setting(
        AUTO_WARMUP,
        "linear warmup in optimizer steps; -1: min(10, steps x substeps "
        "// 10), so a fresh optimizer does not move every weight by the full "
        "rate at once; 0: none",
    )
    min_lr_ratio: float = setting(0.0, "linear/cosine decay ends at this share of --learning-rate")
    adam_beta1: float = setting(0.9, "AdamW beta1")
    adam_beta2: float = setting(0.95, "AdamW beta2")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this (0: no clipping)")
    lora_rank: int = setting(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: float = setting(32.0, "LoRA alpha")
    lora_target_modules: str = setting(
        "all-linear", "modules LoRA adapts: all-linear or a comma list, e.g. q_proj,v_proj"
    )
    dtype: str = setting("float32", "model dtype: float32 or bfloat16 (log-probs are float32 either way)")
    save_every: int = setting(0, "checkpoint every N steps (0: only the final model)")
    keep_checkpoints: int = setting(2, "checkpoints kept (the newest)")
    eval_every: int = setting(0, "evaluate every N steps (0: only before and after)")
    log_with: str = setting("", "comma list of trackers: tensorboard, wandb, trackio, ...")
    max_bad_steps: int = setting(5, "stop after this many consecutive non-finite steps")
    overwrite: bool = setting(False, "replace the files mentor wrote in a run directory made with another config")
    resume: bool = setting(False, "continue the run in --output-dir (an error if it has no checkpoint)")
    quiet: bool = setting(False, "no progress bar")
    progress_every: int = setting(10, "without a terminal (a log file, CI): a plain progress line every N steps")
    sample_log_every: int = setting(10, "samples.jsonl: a few completions, token by token, every N steps (0: off)")
    sample_log_rows: int = setting(4, "sequences per logged step in samples.jsonl")

    def __post_init__(self) -> None:
        # every config is checked where it is made, from flags, YAML or Python alike: types first, then values
        check_field_types(self)
        self.validate()

    def validate(self) -> None:
        """Each class's own rules (``check_own``), once each, the most basic first: training's first, then the
        other sections', the recipe's last (how its sections combine). None calls another's, so forgetting a call
        cannot skip a section, and the order does not depend on how a recipe's ``check_own`` is written."""
        for section in reversed(type(self).__mro__):
            if "check_own" in vars(section):
                vars(section)["check_own"](self)

    def check_own(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "group_size",
            "micro_batch_size",
            "num_substeps",
            "keep_checkpoints",
            "max_bad_steps",
        )
        require_at_least_one(self, *positive)
        if not 0 <= self.seed < 2**32:
            raise MentorError(f"--seed must lie in 0..{2**32 - 1} (got {self.seed})")
        if not self.learning_rate > 0:
            raise MentorError(f"--learning-rate must be positive (got {self.learning_rate})")
        if self.learning_rate > 1:  # AdamW moves every weight by about this much per step: above 1 nothing trains
            raise MentorError(
                f"--learning-rate {self.learning_rate:g} is far too large (AdamW moves each weight by "
                "about this much per step): use a value such as 1e-4"
            )
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
            raise MentorError(
                "--dtype float16 cannot train (without loss scaling its gradients overflow to NaN): "
                "use bfloat16 or float32"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise MentorError(f"--dtype {self.dtype!r} is unknown: use float32 or bfloat16")
        if self.batch_size * self.group_size < self.num_substeps:
            raise MentorError("--num-substeps cannot exceed the number of sequences per step")
        if self.warmup_steps < AUTO_WARMUP:
            raise MentorError(f"--warmup-steps must be -1 (automatic), 0 (none) or more (got {self.warmup_steps})")
        require_warmup_within(self.warmup_steps, self.steps * self.num_substeps, "--steps x --num-substeps")
        for name in (
            "save_every",
            "eval_every",
            "max_grad_norm",
            "weight_decay",
            "progress_every",
            "sample_log_every",
            "sample_log_rows",
        ):
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
class ModelConfig:
    """The model to train."""

    model: str = setting("", "the model to train: a directory, a .gguf file or a hub id")

    def check_own(self) -> None:
        if not self.model:
            raise MentorError(f"{self.recipe} needs --model (a model directory or hub id)")


@dataclass
class PromptsConfig:
    """Prompts the student samples on."""

    prompts: str = setting(
        "",
        "JSONL with `prompt` or `messages` records (rl: and an `answer` for the grader; "
        "distill: name=FILE,name=FILE for one teacher per data set)",
    )


@dataclass
class DataConfig:
    """Training data (prompt + completion records)."""

    data: str = setting(
        "",
        "JSONL of prompt+completion records, or messages ending with an assistant turn "
        "(coe: optionally with `category`)",
    )
    train_size: int = setting(
        20000, "problems drawn from the built-in data (sft: from --task; coe: per category, with --builtin)"
    )

    def check_own(self) -> None:
        require_at_least_one(self, "train_size")


@dataclass
class TaskConfig:
    """Task, evaluation and prompt encoding."""

    task: str = setting(
        "", "a built-in task (e.g. arithmetic): its problems instead of a file, its grader and the held-out evaluation"
    )
    eval_size: int = setting(200, "held-out problems of --task evaluated before, every --eval-every steps and after")
    chat_template: bool = setting(
        False,
        "wrap plain `prompt` records and --task prompts in the tokenizer's chat "
        "template (`messages` records always are)",
    )
    max_prompt_tokens: int = setting(0, "longest prompt in tokens (0: the model's context minus --max-new-tokens)")
    long_prompts: str = setting("skip", "a prompt over the limit: skip (and count) or fail")
    max_new_tokens: int = setting(256, "tokens sampled per completion at most (sft: per evaluation answer)")

    def check_own(self) -> None:
        require_at_least_one(self, "max_new_tokens", "eval_size")
        if self.max_prompt_tokens < 0:
            raise MentorError("--max-prompt-tokens cannot be negative (0: the model's context minus --max-new-tokens)")
        if self.long_prompts not in ("skip", "fail"):
            raise MentorError("--long-prompts must be 'skip' or 'fail'")


SAMPLERS = ("hf", "vllm")


@dataclass
class SamplerConfig:
    """Sampler backend."""

    sampler: str = setting(
        "hf",
        "who samples (distill, rl: the student; sft --from-teacher: the teacher): hf "
        "(transformers generate) or vllm (a colocated vLLM engine, CUDA or CPU "
        "build: `make vllm`, docs/vllm.md)",
    )
    vllm_gpu_memory_utilization: float = setting(
        0.3,
        "share of the GPU the colocated vLLM engine may take (CUDA; on "
        "the CPU: $VLLM_CPU_KVCACHE_SPACE GiB, else sized to the model)",
    )
    vllm_enforce_eager: bool = setting(
        False,
        "run the vLLM engine eagerly: no torch.compile or graph capture, so it "
        "starts in seconds but samples slower (short runs, tests)",
    )

    def check_own(self) -> None:
        if self.sampler not in SAMPLERS:
            raise MentorError(f"--sampler {self.sampler!r} is unknown: use {' or '.join(SAMPLERS)}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise MentorError("--vllm-gpu-memory-utilization is a share of the GPU: it must lie in (0, 1]")


@dataclass
class SamplingConfig(SamplerConfig):
    """Sampling the student."""

    temperature: float = setting(1.0, "sampling temperature (the recorded log-probs are of this tempered softmax)")
    top_k: int = setting(0, "refused for training (the importance ratio needs the full softmax); 0: off")
    top_p: float = setting(1.0, "refused for training, as --top-k; 1: off")
    env: str = setting(
        "",
        "multi-turn rollouts in an environment that answers each student turn (calculator: a "
        "Python-expression tool for GSM8K-style problems; docs/multi_turn.md); '': one turn",
    )
    max_turns: int = setting(4, "--env: student turns per conversation at most, each up to --max-new-tokens")

    def check_own(self) -> None:
        if not self.temperature > 0:
            raise MentorError("--temperature must be positive")
        if self.env:
            from mentor.envs import get_env

            get_env(self.env)
        if self.max_turns < 1:
            raise MentorError("--max-turns must be at least 1")
        if self.top_k or self.top_p != 1.0:
            # the trainer's log-probs are the full tempered softmax; truncated sampling would record others
            raise MentorError(
                "--top-k/--top-p cannot be used for training: the trainer's importance ratio uses "
                "the full softmax at --temperature, so sample from it (lower --temperature instead)"
            )


POLICY_LOSSES = ("importance_sampling", "ppo")  # the losses of sampled tokens (cross_entropy is sft's)


@dataclass
class PolicyLossConfig:
    """Policy-gradient loss (distill, rl)."""

    loss: str = setting(
        "importance_sampling", "importance_sampling (pi/q x advantage) or ppo (the same, clipped: needs --clip-ratio)"
    )
    clip_ratio: float = setting(
        0.0, "> 0: the clipped (PPO) objective, ratio kept in [1-c, 1+c], whatever --loss says; 0: no clipping"
    )
    tis_cap: float = setting(
        0.0,
        "truncated importance sampling: cap each token's sampler-to-trainer ratio at "
        "this (at least 1; for an engine such as vLLM whose log-probs differ from the "
        "trainer's); 0: off",
    )
    kl_coef: float = setting(
        1.0, "weight of the per-token reverse KL to the teacher (rl: to --reference, 0: no penalty)"
    )

    def check_own(self) -> None:
        check_policy_loss(self.loss, self.clip_ratio, self.tis_cap)
        if self.kl_coef < 0:
            raise MentorError(
                "--kl-coef cannot be negative: a negative weight inverts the objective (the student "
                "would move away from the teacher or reference)"
            )


def check_policy_loss(loss: str, clip_ratio: float, tis_cap: float) -> None:
    """A clip ratio > 0 means the clipped objective; combinations that contradict it (or do nothing) are refused."""
    if clip_ratio < 0:
        raise MentorError(f"--clip-ratio cannot be negative (got {clip_ratio:g}; 0: no clipping)")
    if loss == "cross_entropy":
        raise MentorError(
            "--loss cross_entropy trains on given tokens and has no importance ratio to clip or cap: "
            "use `mentor sft` for it, or --loss importance_sampling / ppo here"
        )
    if loss not in POLICY_LOSSES:
        raise MentorError(f"--loss {loss!r} is unknown: use importance_sampling or ppo")
    if loss == "ppo" and not clip_ratio > 0:
        raise MentorError("--loss ppo needs --clip-ratio above 0 (e.g. 0.2): with 0 nothing is clipped")
    if tis_cap < 0 or 0 < tis_cap < 1:
        raise MentorError(
            f"--tis-cap {tis_cap:g} must be at least 1 (or 0 for off): a cap below 1 would "
            "down-weight the tokens sampler and trainer agree on"
        )


@dataclass
class RemoteConfig:
    """Remote teacher or reference (a URL: vLLM, SGLang or mentor serve-teacher)."""

    teacher_tokenizer: str = setting(
        "", "the server's tokenizer (directory or hub id) for the vocabulary check; empty: ask the server"
    )
    teacher_api_key: str = setting("", "bearer key for the server (or $MENTOR_TEACHER_API_KEY); never written to disk")
    teacher_timeout: float = setting(120.0, "seconds per request before it counts as failed and is retried")

    def check_own(self) -> None:
        if not self.teacher_timeout > 0:
            raise MentorError("--teacher-timeout must be positive (seconds)")


@dataclass
class DistillConfig(PromptsConfig, TaskConfig, SamplingConfig, PolicyLossConfig, RemoteConfig, TrainConfig):
    """On-policy distillation (tinker-cookbook's defaults, tuned for stability on small models)."""

    student: str = setting("", "the student to train: a directory, a .gguf file or a hub id")
    teacher: str = setting(
        "",
        "the teacher: a directory, a .gguf file, a hub id, a URL (http://host:port/v1), "
        "name=TEACHER,name=TEACHER (one per --prompts data set) or self (a frozen copy of "
        "the student's starting weights)",
    )
    teacher_context: str = setting(
        "",
        "privileged context: text (or a file of it) that the teacher reads before "
        "every prompt without a teacher_prompt/teacher_messages/context of its own; "
        "the student never sees it (docs/privileged_context.md)",
    )
    teacher_context_template: str = setting(
        DEFAULT_CONTEXT_TEMPLATE,
        "how a context (--teacher-context or a record's `context`) and the prompt make the teacher's prompt",
    )
    kl_discount: float = setting(
        0.0, "discount of later tokens' reverse KL added to each token's advantage (0: each token's own)"
    )
    divergence: str = setting(
        "sampled",
        "sampled: the sampled token's log q - log p as its advantage (any "
        "teacher); full: the exact reverse KL over the vocabulary; top_k: the "
        "same over the --kl-top-k likeliest; jsd: generalized JSD with "
        "--jsd-beta (full, jsd: an in-process teacher; top_k: also one server)",
    )
    kl_top_k: int = setting(20, "tokens of --divergence top_k")
    jsd_beta: float = setting(
        0.5, "--divergence jsd: 0 forward KL(teacher||student), 1 reverse KL, between the interpolated JSD"
    )
    reward_coef: float = setting(0.0, "add this times the group-centred --task reward to every token's advantage")
    check: bool = setting(
        True,
        "run `mentor check` on teacher and student first: stop on a blocking mismatch, print "
        "its warnings (--no-check skips it)",
    )

    recipe = "distillation"

    def check_own(self) -> None:
        if not self.student or not self.teacher:
            raise MentorError("distillation needs --student and --teacher (a model directory or hub id each)")
        if not self.prompts and not self.task:
            raise MentorError("distillation needs --prompts FILE.jsonl (or a built-in --task)")
        teachers = named_paths(self.teacher)
        if teachers is not None and set(named_paths(self.prompts) or ()) != set(teachers):
            raise MentorError(
                "with one teacher per data set, --prompts must name the same data sets: "
                f"--prompts {','.join(f'{n}=FILE' for n in teachers)}"
            )
        if not 0 <= self.kl_discount <= 1:
            raise MentorError("--kl-discount must lie in [0, 1]")
        if self.reward_coef < 0:
            raise MentorError(
                "--reward-coef cannot be negative: a negative weight inverts the objective (the "
                "student would move away from the reward)"
            )
        if not self.kl_coef and not self.reward_coef:
            raise MentorError("--kl-coef 0 without --reward-coef leaves nothing to learn: raise --kl-coef")
        if self.reward_coef and not self.task:
            raise MentorError("--reward-coef needs a --task whose grader rewards the samples (or drop it)")
        if self.reward_coef and self.group_size < 2:
            raise MentorError(
                "--reward-coef needs --group-size of at least 2: the reward is centred on its "
                "group's mean, which one sample equals"
            )
        require_at_least_one(self, "kl_top_k")
        divergence = DIVERGENCES.get(self.divergence)
        if divergence is None:
            raise MentorError(f"--divergence {self.divergence!r} is unknown: use {', '.join(DIVERGENCES)}")
        if not 0 <= self.jsd_beta <= 1:
            raise MentorError(f"--jsd-beta must lie in [0, 1] (got {self.jsd_beta:g})")
        if self.jsd_beta != 0.5 and self.divergence != "jsd":
            raise MentorError("--jsd-beta only acts with --divergence jsd: add it or drop --jsd-beta")
        # what the divergence needs of the teacher: the whole distribution only in-process, the top-k also from one
        # server (vLLM's prompt_logprobs=k), the sampled tokens' log-probs from any teacher or several
        several, server = "=" in self.teacher, is_url(self.teacher)
        if divergence.needs != TEACHER_LOGPROBS and (several or (server and divergence.needs == TEACHER_MODEL)):
            raise MentorError(
                f"--divergence {self.divergence} needs the teacher's whole distribution, so one "
                "in-process teacher: use --divergence sampled (or top_k, one server) with a server, "
                "sampled with several teachers"
            )
        if divergence.in_forward and self.kl_discount:
            raise MentorError(f"--divergence {self.divergence} is a per-position loss: --kl-discount must be 0")
        check_context_template(self.teacher_context_template)


def require_at_least_one(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise MentorError(f"--{_flag(name)} must be at least 1 (got {getattr(config, name)})")


def require_warmup_within(warmup_steps: int, optimizer_steps: int, what: str) -> None:
    """A warmup longer than the run would end it below --learning-rate (the ramp reaches it at its last step)."""
    if warmup_steps > optimizer_steps:
        raise MentorError(
            f"--warmup-steps {warmup_steps} is longer than the run's {optimizer_steps} optimizer steps "
            f"({what}), so the learning rate would never reach --learning-rate: use at most "
            f"{optimizer_steps}, or -1 (automatic)"
        )


def named_paths(spec: str) -> dict[str, str] | None:
    """``math=/models/a,code=/models/b`` -> {name: path}; None for a single path or URL."""
    if not re.fullmatch(r"\w+=[^,]+(,\w+=[^,]+)*", spec or ""):
        return None
    return dict(part.split("=", 1) for part in spec.split(","))


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
    kinds = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        setattr(config, f.name, _typed(f.name, kinds[f.name], getattr(config, f.name)))


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
            text = value.strip().replace("_", "")
            try:  # "1e3" is a whole number written as a float: the int check below decides
                number = int(text) if kind is int and re.fullmatch(r"[+-]?\d+", text) else float(text)
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


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` flag per config field, with its help and default, grouped by config section.

    Unset flags stay absent so YAML values survive.
    """
    parser.add_argument("--config", help="YAML file with config fields (flags override it; default: none)")
    kinds = typing.get_type_hints(cls)
    for section in cls.__mro__:  # the recipe's own fields first, training last
        declared = [f for f in dataclasses.fields(cls) if _declaring_section(cls, f.name) is section]
        if not declared:
            continue
        group = parser.add_argument_group((section.__doc__ or section.__name__).splitlines()[0].rstrip("."))
        for f in declared:
            kind = kinds[f.name]
            as_kind: dict[str, typing.Any] = (
                {"action": argparse.BooleanOptionalAction}
                if kind is bool
                else {"type": finite_float if kind is float else kind, "metavar": kind.__name__.upper()}
            )
            shown = f"{f.metadata.get('help', '')} (default: {_shown_default(f.default)})".replace("%", "%%")
            group.add_argument(f"--{_flag(f.name)}", dest=f.name, default=argparse.SUPPRESS, help=shown, **as_kind)


def _declaring_section(cls, name: str) -> type:
    """The most basic class in ``cls``'s MRO that declares field ``name`` (where it is documented)."""
    return [c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {})][-1]


def _shown_default(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


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
    data = read_user_file(
        yaml_path,
        "config file",
        missing="check the --config path",
        not_a_file="pass a .yaml file to --config",
        max_bytes=MAX_CONFIG_BYTES,
        too_big="not a config: pass the YAML file of config fields",
    )
    try:
        loaded = yaml.load(data, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise MentorError(
            f"config file {yaml_path!r} sets {exc}: keep one (YAML would silently use the last)"
        ) from None
    except yaml.reader.ReaderError:
        raise MentorError(f"config file {yaml_path!r} is not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise MentorError(
            f"config file {yaml_path!r} is not valid YAML ({where}"
            f"{getattr(exc, 'problem', None) or str(exc).splitlines()[0]}): fix the syntax there"
        ) from None
    except RecursionError:
        raise MentorError(
            f"config file {yaml_path!r} is nested too deeply to be a config: write field: value lines"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise MentorError(f"config file {yaml_path!r} must hold a mapping of field: value")
    keys = [k for k in loaded if not isinstance(k, str)]
    if keys:
        raise MentorError(
            f"config file {yaml_path!r} has a key that is not a field name ({keys[0]!r}): write field: value lines"
        )
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
        hints = [
            f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else name
            for name in unknown
        ]
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
NON_SEMANTIC_FIELDS = {
    "overwrite",
    "resume",
    "quiet",
    "log_with",
    "steps",
    "save_every",
    "keep_checkpoints",
    "eval_every",
    "teacher_api_key",
    "teacher_timeout",
}
# what is logged and shown changes no number of the run
NON_SEMANTIC_FIELDS |= {"progress_every", "sample_log_every", "sample_log_rows", "check"}  # check: reads, never trains


SFT_LOSSES = ("nll", "forward_kl")


@dataclass
class SFTConfig(ModelConfig, DataConfig, TaskConfig, SamplerConfig, TrainConfig):
    """Supervised fine-tuning / off-policy distillation on prompt+completion data."""

    max_new_tokens: int = redefault(TaskConfig, "max_new_tokens", 64)
    from_teacher: str = setting(
        "",
        "off-policy distillation: sample the completions from this teacher (a "
        "directory, .gguf file or hub id), cached in the run directory, paid once",
    )
    teacher_samples: int = setting(1, "--from-teacher: completions per prompt")
    teacher_temperature: float = setting(1.0, "--from-teacher: sampling temperature")
    teacher_prompts: int = setting(
        0, "--from-teacher: prompts to sample for (0: all of --data, or --train-size from --task)"
    )
    sft_loss: str = setting(
        "nll",
        "nll: cross-entropy on the completion tokens; forward_kl (with --from-teacher): logit distillation, "
        "the full-vocabulary KL(teacher || student) at each completion position, the teacher running in the update",
    )

    recipe = "sft"

    def check_own(self) -> None:
        if self.teacher_samples < 1 or not self.teacher_temperature > 0 or self.teacher_prompts < 0:
            raise MentorError(
                "--teacher-samples must be at least 1, --teacher-temperature positive and "
                "--teacher-prompts 0 (all) or more"
            )
        teacher_flags = [
            f"--{_flag(n)}"
            for n, default in (
                ("teacher_samples", 1),
                ("teacher_temperature", 1.0),
                ("teacher_prompts", 0),
                ("sampler", "hf"),
                ("vllm_gpu_memory_utilization", 0.3),
                ("vllm_enforce_eager", False),
            )
            if getattr(self, n) != default
        ]
        if teacher_flags and not self.from_teacher:
            raise MentorError(f"{', '.join(teacher_flags)} only act with --from-teacher TEACHER: add it or drop them")
        if is_url(self.from_teacher) or named_paths(self.from_teacher) is not None:
            raise MentorError(
                "--from-teacher samples completions in-process: name one model (a directory, .gguf "
                "file or hub id), not a server or one teacher per data set"
            )
        if not self.data and not self.task:
            raise MentorError("sft needs --data FILE.jsonl (or a built-in --task)")
        if self.sft_loss not in SFT_LOSSES:
            raise MentorError(f"--sft-loss {self.sft_loss!r}: choose {' or '.join(SFT_LOSSES)}")
        if self.sft_loss == "forward_kl" and not self.from_teacher:
            raise MentorError(
                "--sft-loss forward_kl compares with the teacher's distribution: add --from-teacher TEACHER"
            )


@dataclass
class RLConfig(ModelConfig, PromptsConfig, TaskConfig, SamplingConfig, PolicyLossConfig, RemoteConfig, TrainConfig):
    """On-policy RL with a grader's sequence reward (group baseline; GRPO with --normalize-std)."""

    grader: str = setting("", "exact, numeric, math, code or ifeval; empty: the --task's own")
    normalize_std: bool = setting(False, "divide the group-centred reward by the group's std (GRPO)")
    drop_constant_groups: bool = setting(
        True, "drop (and count) groups whose samples all got the same reward: they carry no signal"
    )
    kl_coef: float = redefault(PolicyLossConfig, "kl_coef", 0.0)
    reference: str = setting(
        "",
        "the KL penalty's reference: a directory, .gguf file, hub id or a URL (a served "
        "model: mentor serve-teacher, vLLM); empty: the initial --model",
    )

    recipe = "rl"

    def check_own(self) -> None:
        if not self.prompts and not self.task:
            raise MentorError("rl needs --prompts FILE.jsonl with answers (or a built-in --task)")
        if self.prompts and not self.task and not self.grader:
            raise MentorError("rl on --prompts needs --grader (exact, numeric, math, code or ifeval)")
        if self.reference and not self.kl_coef:
            raise MentorError("--reference only acts with --kl-coef above 0 (the KL penalty): add one or drop it")
        if self.group_size < 2:
            raise MentorError("rl needs --group-size of at least 2 (the group mean is the baseline)")
