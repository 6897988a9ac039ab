"""The Big Five trait names, in the order used everywhere in the project."""

from __future__ import annotations

TRAITS: tuple[str, ...] = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)
NUM_TRAITS = len(TRAITS)


def traits_dict(scores: list[float] | tuple[float, ...]) -> dict[str, float]:
    """Map five scores in O, C, E, A, N order to a name -> score dict."""
    if len(scores) != NUM_TRAITS:
        raise ValueError(f"expected {NUM_TRAITS} trait scores, got {len(scores)}")
    return {name: float(value) for name, value in zip(TRAITS, scores, strict=True)}
