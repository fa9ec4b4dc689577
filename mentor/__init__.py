"""mentor: post-train small expert language models cheaply.

One pipeline (prompts -> sample -> score -> weigh -> update) shared by on-policy distillation,
SFT and RL. See README.md for the CLI; the public Python API is re-exported here.
"""

from mentor.errors import MentorError

__version__ = "0.1.0"
__all__ = ["MentorError", "__version__"]
