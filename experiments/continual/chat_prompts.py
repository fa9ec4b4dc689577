"""Generic chat prompts for self-distillation and for the chat share of mid-training (Experiment B).

The paper self-distils on generic chat prompts (Tulu3's), not on the benchmark it then measures. Offline,
this module composes such prompts from everyday topics and open requests ("Explain how composting works.",
"What are the pros and cons of working from home?"). None carries a checkable format constraint (no word
counts, no "all lowercase", no JSON, no sections): the IFEval score a self-distilled model gets back cannot
come from training on IFEval-style instructions. ``tests/test_bench_continual.py`` checks that no prompt
here shares a sentence with IFEval's.
"""

from __future__ import annotations

import random

from mentor.errors import MentorError

TOPICS = (
    "composting",
    "learning a new language",
    "houseplants",
    "saving money",
    "baking bread",
    "public libraries",
    "cycling to work",
    "the water cycle",
    "volcanoes",
    "board games",
    "chess",
    "photography",
    "jazz",
    "the moon",
    "honey bees",
    "recycling",
    "camping",
    "coffee",
    "tea",
    "rainforests",
    "electric cars",
    "the history of the printing press",
    "sleep",
    "running",
    "meditation",
    "online privacy",
    "birdwatching",
    "gardening in small spaces",
    "the immune system",
    "solar panels",
    "museums",
    "knitting",
    "the ocean tides",
    "volunteering",
    "healthy breakfasts",
    "budget travel",
    "learning to code",
    "video calls",
    "sourdough",
    "penguins",
    "the Roman empire",
    "clouds",
    "earthquakes",
    "time management",
    "writing a resume",
    "job interviews",
    "moving to a new city",
    "adopting a dog",
    "cats",
    "origami",
    "the stock market",
    "renewable energy",
    "paper airplanes",
    "the human heart",
    "dinosaurs",
    "pizza",
    "rainbows",
)

REQUESTS = (
    "Explain {topic} to me.",
    "What should a beginner know about {topic}?",
    "Tell me an interesting fact about {topic}.",
    "Why do people care about {topic}?",
    "How would you describe {topic} to a child?",
    "What are the pros and cons of {topic}?",
    "Give me some advice about {topic}.",
    "What is a common misconception about {topic}?",
    "Can you help me understand {topic} better?",
    "What questions should I ask an expert on {topic}?",
    "Write something cheerful about {topic}.",
    "How has {topic} changed over time?",
)


def generic_chat_prompts(n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct prompts drawn without replacement (seeded), none of them in ``exclude``.

    Disjoint splits come from excluding an earlier draw: ``generic_chat_prompts(32, 1, set(first))``.
    """
    pool = [r.format(topic=t) for t in TOPICS for r in REQUESTS]
    pool = [p for p in pool if p not in exclude]
    if n > len(pool):
        raise MentorError(f"asked for {n} generic chat prompts, only {len(pool)} are left")
    return random.Random(seed).sample(pool, n)
