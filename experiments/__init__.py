"""mentor's experiments, apart from the library: each folder holds an experiment's code, protocol and results.

``mentor bench paper|continual|coe`` runs the registered ones (``experiments/cli.py``) from a source checkout;
the installed ``mentor`` package never imports this one except through that command. Index and results:
``docs/experiments.md``.
"""
