"""Algorithms: each says where the tokens come from and how every token is weighted. Nothing else."""
