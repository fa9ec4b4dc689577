"""Sample stage: who writes the tokens. Backends: transformers ``generate`` (default), vLLM (extra)."""

from mentor.sample.base import SampledBatch, Sampler

__all__ = ["Sampler", "SampledBatch"]
