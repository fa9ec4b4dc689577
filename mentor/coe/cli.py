"""``mentor coe [label|train-experts|assemble|train-router|inspect]``."""

from __future__ import annotations

import logging

from mentor.config import add_config_flags, build_config

logger = logging.getLogger(__name__)
STEPS = {
    "label": "step 1: label the data, one JSONL per category (OUT/labels)",
    "train-experts": "step 2: FFN-only SFT of the base per category (OUT/experts/<category>/final)",
    "assemble": "step 3: experts + new routers -> a Mixtral / Qwen3-MoE checkpoint (OUT/moe)",
    "train-router": "step 4: SFT of the MoE with expert MLPs frozen + routing loss (OUT/stage2/final)",
    "inspect": "step 6: routing PNG/HTML and expert usage of the trained MoE (OUT/inspect)",
}


def _config(args):
    from mentor.coe.recipe import CoEConfig

    return build_config(CoEConfig, args)


def _run(args) -> None:
    from mentor.coe import recipe as coe

    config = _config(args)
    step = getattr(args, "coe_step", None)
    if step is None:
        out = coe.run_coe(config)
    elif step == "label":
        out = coe.label_step(config)
    elif step == "train-experts":
        out = [coe.train_expert(config, c) for c in config.category_list][-1].parent.parent
    elif step == "assemble":
        out = coe.assemble_step(config)
    elif step == "train-router":
        out = coe.train_router_step(config)
    else:
        from pathlib import Path

        root = Path(config.output_dir)
        trained = coe.earlier_step(root / "stage2" / "final", "train-router")
        prompts = coe.labelled_prompts(root / "labels", config.category_list)
        out = coe.inspect_step(trained, root / "inspect", prompts, config.category_list)["png"]
    logger.info(f"done: {out}")


def add_coe_parser(sub) -> None:
    from mentor.coe.recipe import CoEConfig

    coe = sub.add_parser("coe", help="Collaborative and Semantic Experts: label, FFN experts, MoE, routing")
    add_config_flags(coe, CoEConfig)
    coe.set_defaults(func=_run, coe_step=None)
    steps = coe.add_subparsers(dest="coe_step")
    for name, help_text in STEPS.items():
        step = steps.add_parser(name, help=help_text)
        add_config_flags(step, CoEConfig)
        step.set_defaults(func=_run, coe_step=name)


__all__ = ["add_coe_parser"]
