"""Random scenes and the alt text that describes them."""

from __future__ import annotations

import random

from .records import Scene, ShapeGroup
from .vocabulary import BACKGROUNDS, COLORS, COUNT_WORDS, POSITION_PHRASES, POSITIONS, RADII, SHAPE_PLURALS, SHAPES


def random_scene(rng: random.Random) -> Scene:
    """One or two groups of shapes on a background; two groups never share shape and colour."""
    background = rng.choice(list(BACKGROUNDS))
    if rng.random() < 0.65:  # most pictures show one group
        positions = [rng.choice(POSITIONS)]
    else:  # two groups split the image in halves
        positions = list(rng.choice((("left", "right"), ("top", "bottom"))))
        rng.shuffle(positions)
    groups: list[ShapeGroup] = []
    for position in positions:
        while True:
            group = _random_group(rng, background, position)
            if all((g.shape, g.color) != (group.shape, group.color) for g in groups):
                break
        groups.append(group)
    return Scene(background, tuple(groups), rng.getrandbits(32))


def _random_group(rng: random.Random, background: str, position: str) -> ShapeGroup:
    color = rng.choice([c for c in COLORS if c != background])
    size = rng.choice(tuple(RADII))
    # Three large shapes would not fit side by side in half the image.
    if position == "center":
        count = 1
    elif size == "large":
        count = rng.choices((1, 2), weights=(5, 3))[0]
    else:
        count = rng.choices((1, 2, 3), weights=(5, 3, 2))[0]
    return ShapeGroup(rng.choice(SHAPES), color, size, position, count)


def describe(scene: Scene, rng: random.Random, terse: bool = False) -> str:
    """Alt text for the scene: every shape, colour, size, position and count, and the background.

    Terse alt text, common on the web, names only the main group's count, colour and shape.
    """
    if terse:
        main = scene.groups[0]
        shape = main.shape if main.count == 1 else SHAPE_PLURALS[main.shape]
        count = ("an" if main.color[0] in "aeiou" else "a") if main.count == 1 else COUNT_WORDS[main.count]
        text = rng.choice((f"{count} {main.color} {shape} on {{}} background.", f"An image of {count} {main.color} {shape}, on {{}} background."))
        bg = scene.background
        text = text.format(f"{'an' if bg[0] in 'aeiou' else 'a'} {bg}")
        return text[0].upper() + text[1:]
    phrases = [_group_phrase(group, rng) for group in scene.groups]
    things = " and ".join(phrases)
    bg = scene.background
    a_bg = f"{'an' if bg[0] in 'aeiou' else 'a'} {bg}"
    templates = [
        f"An image of {things}, on {a_bg} background.",
        f"{things}, on {a_bg} background.",
        f"{a_bg} background with {things}.",
        f"{things}, set against a plain {bg} background.",
        f"On {a_bg} background, {things}.",
    ]
    if len(phrases) == 2:
        templates.append(f"{phrases[0]}; {phrases[1]}. The background is {bg}.")
    text = rng.choice(templates)
    return text[0].upper() + text[1:]


def _group_phrase(group: ShapeGroup, rng: random.Random) -> str:
    if group.count == 1:
        count_word = "one" if rng.random() < 0.2 else "a"
        shape_word = group.shape
    else:
        count_word = COUNT_WORDS[group.count]
        shape_word = SHAPE_PLURALS[group.shape]
    where = rng.choice(POSITION_PHRASES[group.position])
    return f"{count_word} {group.size} {group.color} {shape_word} {where}"
