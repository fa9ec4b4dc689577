"""Environments for multi-turn rollouts: they answer each student turn (``mentor.envs.base``, docs/multi_turn.md)."""

from mentor.envs import calculator  # noqa: E402,F401  (the built-in environments register themselves)
from mentor.envs.base import ENVIRONMENTS, Environment, EnvReply, EnvSpec, get_env, register_env

__all__ = ["ENVIRONMENTS", "EnvReply", "EnvSpec", "Environment", "get_env", "register_env"]
