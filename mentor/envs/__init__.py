"""Environments for multi-turn rollouts: they answer each student turn (``mentor.envs.base``, docs/multi_turn.md)."""

from mentor.envs.base import ENVIRONMENTS, EnvReply, EnvSpec, Environment, get_env, register_env

__all__ = ["ENVIRONMENTS", "EnvReply", "EnvSpec", "Environment", "get_env", "register_env"]
