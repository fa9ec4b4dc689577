"""``mentor bench paper`` and ``mentor bench coe``: every benchmark registers here; heavy imports wait for the run."""

from __future__ import annotations

import argparse


def add_bench_paper(bench_sub) -> None:
    paper = bench_sub.add_parser("paper", help="the on-policy distillation post's three experiments at CPU scale "
                                               "(math vs SFT/RL, continual learning, one prompt)")
    paper.add_argument("--out", default="runs/paper", help="directory for runs, results.md and plots")
    paper.add_argument("--quick", action="store_true", help="a smoke-test scale (under 5 minutes)")
    paper.add_argument("--quiet", action="store_true", help="no progress bars")
    paper.add_argument("--only", default="ABC", help="experiments to run, e.g. AC (C reuses A's student)")
    # smaller knobs, for tests and for trying the experiments at other sizes
    for name in ("student_sft_steps", "steps", "prompts_per_step", "group_size", "eval_every", "eval_size",
                 "chat_sft_steps", "midtrain_steps",
                 "self_distill_steps", "people", "one_prompt_steps", "one_prompt_samples"):
        paper.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None,
                           help=argparse.SUPPRESS)
    paper.set_defaults(func=_run)


def _run(args) -> None:
    from mentor.bench.paper import PaperScale, run_paper

    knobs = {k: getattr(args, k) for k in PaperScale.__dataclass_fields__ if hasattr(args, k)}
    run_paper(out=args.out, quick=args.quick, quiet=args.quiet, only=args.only.upper(), **knobs)


def add_bench_parsers(bench_sub) -> None:
    add_bench_paper(bench_sub)
    add_bench_coe(bench_sub)


def add_bench_coe(bench_sub) -> None:
    bench = bench_sub.add_parser("coe", help="CoE vs mixed SFT vs experts vs ablations on built-in categories")
    bench.add_argument("--out", default="benchmarks/coe", help="where results.md, results.json, routing.png go")
    bench.add_argument("--quick", action="store_true", help="a smoke test at toy size (< 1 minute)")
    bench.set_defaults(func=_run_coe)


def _run_coe(args) -> None:
    from mentor.bench.coe import run_bench

    run_bench(args.out, quick=args.quick)
