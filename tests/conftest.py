"""Tiny real-architecture models built in code, saved and reloaded like a user's model."""

from __future__ import annotations

import pytest
import torch

from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
from mentor.recipes.common import quiet_transformers
from tests.helpers import train_teacher

quiet_transformers()
torch.set_num_threads(2)


def make_model_dir(path, arch="qwen3", hidden=32, layers=2, heads=4, seed=0, alphabet=None, max_positions=64):
    tokenizer = build_char_tokenizer(alphabet) if alphabet else build_char_tokenizer()
    config = tiny_config(arch, len(tokenizer), hidden, layers, heads, tokenizer=tokenizer, max_positions=max_positions)
    save_tiny(build_tiny_model(config, seed=seed), tokenizer, path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """A trained-a-little teacher (so its distribution is peaked) and a random student, on disk."""
    root = tmp_path_factory.mktemp("models")
    teacher = train_teacher(
        make_model_dir(root / "teacher_init", hidden=48, layers=2, seed=1), root / "teacher_run", steps=40
    )
    student = make_model_dir(root / "student", hidden=32, layers=2, seed=2)
    return {"teacher": teacher, "student": student, "root": root}


@pytest.fixture()
def prompts_file(tmp_path):
    import json

    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": p} for p in ["12+34*5=", "7*8+9=", "45+6+7=", "81*3-20=", "5+5*5=", "60*2+1="]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# --- markers (pyproject's [tool.pytest.ini_options]; `make test-fast` leaves out all but the plain ones) ---------
# by file, so a new test in one of these files is marked like its neighbours
MARKED_FILES = {
    "test_real_model.py": ("real", "network", "slow"),
    "test_real_benchmarks.py": ("real",),
    "test_check.py": ("real",),
    "test_turns.py": ("real",),
    "test_multi_turn.py": ("real", "slow"),
    "test_distributed.py": ("distributed", "slow"),
    "test_fsdp.py": ("distributed", "slow"),
    "test_resume.py": ("slow",),
    "test_bench_paper.py": ("slow",),
    "test_bench_coe.py": ("slow",),
    "test_bench_continual.py": ("real", "slow"),
    "test_bench_privileged.py": ("real", "slow"),
    "test_bad_input_corpus.py": ("slow",),
    "test_coe.py": ("slow",),
    "test_privileged_context.py": ("slow",),
    "test_remote_faults.py": ("slow",),
    "test_cli.py": ("slow",),
    "test_backends.py": ("slow",),
    "test_real_model_engine.py": ("real", "network"),
}
MARKED_TESTS = {"test_real_gguf_pruned_equals_skipping": ("real", "network", "slow")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = MARKED_FILES.get(item.path.name, ()) + MARKED_TESTS.get(item.originalname, ())
        for name in names:
            item.add_marker(getattr(pytest.mark, name))
