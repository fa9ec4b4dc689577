"""``mentor``: one command, a subcommand per recipe. Problems the user can fix print one line, exit 2."""

from __future__ import annotations

import argparse
import logging
import sys

from mentor.config import DistillConfig, RLConfig, SFTConfig, add_config_flags, build_config, finite_float
from mentor.errors import MentorError
from mentor.logs import setup_cli_logging

logger = logging.getLogger(__name__)


class Parser(argparse.ArgumentParser):
    """argparse, held to mentor's promise: a bad flag is one line on stderr and exit code 2 (no usage block),
    and every float flag is a finite number. Subcommand parsers are made of the same class."""

    def add_argument(self, *names, **kwargs):
        if kwargs.get("type") is float:
            kwargs["type"] = finite_float
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        self.exit(2, f"mentor: error: {message} (`{self.prog} --help` lists the options)\n")


def _distill(args) -> None:
    from mentor.recipes.distill import run_distill

    trainer, history = run_distill(build_config(DistillConfig, args))
    _print_done(trainer, history)


def _sft(args) -> None:
    from mentor.recipes.sft import run_sft

    trainer, history = run_sft(build_config(SFTConfig, args))
    _print_done(trainer, history)


def _rl(args) -> None:
    from mentor.recipes.rl import run_rl

    trainer, history = run_rl(build_config(RLConfig, args))
    _print_done(trainer, history)


def _print_done(trainer, history) -> None:
    last = history[-1] if history else {}
    shown = ", ".join(
        f"{k}={v:.4g}" for k, v in last.items() if k in ("accuracy", "reverse_kl", "loss") and isinstance(v, float)
    )
    logger.info(f"done: {trainer.step} steps{', ' + shown if shown else ''}; run directory {trainer.run.path}")
    flops = trainer.ledger.snapshot()
    logger.info(
        f"compute: teacher {flops['flops_teacher']:.3g} FLOPs, student {flops['flops_student']:.3g} FLOPs "
        f"(summary.md has the split by sampling / scoring / training)"
    )


def _eval(args) -> None:
    from mentor.evaluation.cli import run_eval

    run_eval(args)


def _demo(args) -> None:
    from mentor.recipes.demo import run_demo, show_result

    show_result(run_demo(out=args.out, quick=args.quick, opd_steps=args.steps, retrain_teacher=args.retrain_teacher))


def _serve_teacher(args) -> None:
    import os

    from mentor.serve import serve_teacher

    serve_teacher(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("MENTOR_API_KEY"),
        dtype=args.dtype,
        device=args.device,
        served_model_name=args.served_model_name,
        max_batch_tokens=args.max_batch_tokens,
        max_request_tokens=args.max_request_tokens,
        max_request_bytes=args.max_request_mb * 2**20,
        verbose=args.verbose,
    )


def _prune(args) -> None:
    from mentor.models.prune import prune
    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    prune(
        args.model,
        args.out,
        drop=args.drop,
        every=args.drop_every,
        evenly=args.drop_evenly,
        by_influence=args.drop_by_influence,
        dtype=args.dtype,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mentor", description="Post-train small expert language models cheaply.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny teacher/student on arithmetic and show OPD improving the student")
    demo.add_argument("--out", default="runs/demo", help="run directory")
    demo.add_argument("--quick", action="store_true", help="smaller and faster (under 2 minutes)")
    demo.add_argument("--steps", type=int, default=None, help="OPD steps (default: 100, or 30 with --quick)")
    demo.add_argument(
        "--retrain-teacher", action="store_true", help="train the teacher instead of loading the shipped one"
    )
    demo.set_defaults(func=_demo)

    distill = sub.add_parser("distill", help="on-policy distillation of --student from --teacher on --prompts")
    add_config_flags(distill, DistillConfig)
    distill.set_defaults(func=_distill)

    sft = sub.add_parser("sft", help="supervised fine-tuning on prompt+completion data")
    add_config_flags(sft, SFTConfig)
    sft.set_defaults(func=_sft)

    rl = sub.add_parser("rl", help="on-policy RL with a grader's reward (group baseline, GRPO, PPO clip, KL)")
    add_config_flags(rl, RLConfig)
    rl.set_defaults(func=_rl)

    ev = sub.add_parser("eval", help="accuracy of a model (or a run directory's final model) on a task")
    ev.add_argument("model", help="model directory, hub id, or run directory")
    ev.add_argument(
        "--task",
        default="arithmetic",
        help="a built-in task, or SCHEMA:FILE for a local gsm8k, math, humaneval or ifeval file",
    )
    ev.add_argument("--size", type=int, default=200, help="held-out problems")
    ev.add_argument("--max-new-tokens", type=int, default=64)
    ev.add_argument("--samples", type=int, default=1, help="samples per problem (n); 1 = greedy")
    ev.add_argument("--k", type=int, default=0, help="report unbiased pass@k from the n samples (default k = n)")
    ev.add_argument("--grader", default="", help="override the task's grader: exact, numeric, math, code, ifeval")
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument(
        "--sampler",
        default="hf",
        choices=("hf", "vllm"),
        help="hf (transformers generate) or vllm (an engine in this process: `make vllm`, docs/vllm.md)",
    )
    ev.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    ev.add_argument("--show", type=int, default=3, help="print this many completions")
    ev.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap each prompt in the tokenizer's chat template (default: as a run directory was trained; "
        "else on when the tokenizer has one)",
    )
    ev.add_argument(
        "--records",
        default=None,
        metavar="PATH",
        help="per-sample JSONL (prompt, completion, reference, correct; IFEval: each instruction); "
        "default eval_samples.jsonl in the run directory, or here; an existing file is never "
        "overwritten (NAME-1.jsonl, NAME-2.jsonl... instead)",
    )
    ev.set_defaults(func=_eval)

    serve = sub.add_parser(
        "serve-teacher", help="serve a model's token log-probs over HTTP (OpenAI completions protocol)"
    )
    serve.add_argument("model", help="model directory or hub id")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (other than loopback needs --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    serve.add_argument("--api-key", default="", help="require 'Authorization: Bearer KEY' (or $MENTOR_API_KEY)")
    serve.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    serve.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    serve.add_argument("--served-model-name", default="", help="the model name clients send (default: MODEL)")
    serve.add_argument("--max-batch-tokens", type=int, default=16384, help="padded tokens per forward pass")
    serve.add_argument("--max-request-tokens", type=int, default=262_144, help="larger requests get HTTP 413")
    serve.add_argument("--max-request-mb", type=int, default=32, help="larger request bodies get HTTP 413")
    serve.add_argument("--verbose", action="store_true", help="log every request")
    serve.set_defaults(func=_serve_teacher)

    prune = sub.add_parser(
        "prune", help="remove decoder layers from a model (by index or by a rule) into a new directory"
    )
    prune.add_argument("model", help="model directory, .gguf file or hub id (only read)")
    prune.add_argument("--out", required=True, help="a new (or empty) directory for the pruned model")
    rule = prune.add_mutually_exclusive_group(required=True)
    rule.add_argument("--drop", default=None, metavar="LAYERS", help="0-based layers to drop, e.g. 12,16,20 or 12-14")
    rule.add_argument(
        "--drop-every",
        type=int,
        default=None,
        metavar="K",
        help="drop every K-th layer (indices K-1, 2K-1, ...), never the last",
    )
    rule.add_argument(
        "--drop-evenly",
        type=int,
        default=None,
        metavar="N",
        help="drop N layers evenly spaced over the middle half (docs/prune.md)",
    )
    rule.add_argument(
        "--drop-by-influence",
        type=int,
        default=None,
        metavar="N",
        help="drop the N layers of lowest block influence (ShortGPT) on built-in prompts",
    )
    prune.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's; GGUF: float32) | float32 | bfloat16 | float16"
    )
    prune.set_defaults(func=_prune)

    from mentor.check import add_check_parser
    from mentor.coe.cli import add_coe_parser

    add_check_parser(sub)  # mentor check

    add_coe_parser(sub)
    _add_bench_parser(sub)
    from mentor.report.cli import add_report_parsers

    add_report_parsers(sub)  # mentor inspect, mentor report
    return parser


def _experiments_cli():
    """``experiments/cli.py`` of the source checkout this mentor runs from, or None: the experiments live beside
    the library, not in it, so an installed wheel has none. Imported only to register ``mentor bench``."""
    try:
        import experiments.cli as cli

        return cli
    except ImportError:
        pass
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "experiments" / "cli.py").is_file():
        return None
    if str(root) not in sys.path:
        sys.path.append(str(root))  # last: the checkout never shadows an installed package
    try:
        import experiments.cli as cli

        return cli
    except ImportError:
        return None


def _add_bench_parser(sub) -> None:
    cli = _experiments_cli()
    bench = sub.add_parser(
        "bench",
        help="run an experiment of experiments/ (paper, continual, coe): it writes "
        "results.md and figures; needs a source checkout",
    )
    if cli is not None:
        cli.add_bench_parsers(bench.add_subparsers(dest="benchmark", required=True))
        return
    bench.add_argument("experiment", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(func=_no_experiments)


def _no_experiments(args) -> None:
    raise MentorError(
        "mentor bench runs the experiments of a source checkout (experiments/ beside mentor/): "
        "clone the repository and `pip install -e .` there"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_cli_logging()  # the library's notes and warnings (the ``mentor`` logger) on stderr, through rich
    try:
        args.func(args)
    except MentorError as exc:
        print(f"mentor: error: {one_line(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # 2: bad input; 128 + signal: stopped on SIGINT/SIGTERM, resumable
    except OSError as exc:  # the file system or the network refused: the environment, not a bug in mentor
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(
            f"mentor: error: {exc.strerror or exc}{where}: check the path, its permissions and the free disk space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("mentor: interrupted", file=sys.stderr)
        return 130
    return 0


def one_line(message: str) -> str:
    """A message as the one line the CLI promises (a library's multi-line text folded, never cut)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) or "failed"


if __name__ == "__main__":
    sys.exit(main())
