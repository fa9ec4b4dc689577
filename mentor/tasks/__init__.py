"""Tasks: problems with a verifiable answer and the grader that checks a completion.

Built-in tasks and benchmark files by name: ``mentor.tasks.registry.get_task``.
"""
