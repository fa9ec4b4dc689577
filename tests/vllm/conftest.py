"""The vLLM tier: a real engine (vLLM's CPU build here, the CUDA build on a GPU) in this process.

Runs in the virtualenv ``make vllm`` builds (transformers < 5.20 there); elsewhere every test here is skipped with
the reason. The CPU engine refuses attention head size 16, so these tiny models have head size 32.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
from tests.helpers import train_teacher

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def vllm_missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed here: `make vllm` builds its virtualenv and `make test` runs this tier in it"
    return None


def pytest_collection_modifyitems(config, items):
    reason = vllm_missing()
    for item in items:
        if "tests/vllm/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.vllm)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def engine_model_dir(path, arch: str = "qwen3", hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0):
    """A tiny model vLLM's CPU attention accepts (head size hidden / heads = 32), saved as a user's model is."""
    tokenizer = build_char_tokenizer()
    config = tiny_config(arch, len(tokenizer), hidden, layers, heads, tokenizer=tokenizer, max_positions=128)
    save_tiny(build_tiny_model(config, seed=seed), tokenizer, path)
    return str(path)


@pytest.fixture(scope="session")
def engine_dirs(tmp_path_factory):
    """A teacher trained a little on arithmetic (a peaked distribution) and a random student, both head size 32."""
    root = tmp_path_factory.mktemp("engine_models")
    teacher = train_teacher(
        engine_model_dir(root / "teacher_init", hidden=64, layers=2, heads=2, seed=1), root / "teacher_run", steps=30
    )
    student = engine_model_dir(root / "student", hidden=64, layers=2, heads=2, seed=2)
    llama = engine_model_dir(root / "llama", arch="llama", hidden=64, layers=2, heads=2, seed=3)
    return {"teacher": teacher, "student": student, "llama": llama, "root": root}
