"""Benchmarks a user runs from the CLI (``mentor bench ...``): the papers' experiments at CPU scale."""
