"""Drawing a scene: shapes on a background, supersampled and shrunk."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from .records import Scene, ShapeGroup
from .vocabulary import BACKGROUNDS, COLORS, RADII, SUPERSAMPLE


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB image of size x size pixels."""
    rng = random.Random(scene.seed)
    scale = size * SUPERSAMPLE / 64  # scene geometry is in pixels of a 64-pixel image
    canvas = Image.new("RGB", (size * SUPERSAMPLE,) * 2, _jitter(BACKGROUNDS[scene.background], rng))
    draw = ImageDraw.Draw(canvas)
    for group in scene.groups:
        fill = _jitter(COLORS[group.color], rng)
        radius = RADII[group.size]
        for cx, cy in _centers(group, rng):
            _draw_shape(draw, group.shape, cx * scale, cy * scale, radius * scale, fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def _centers(group: ShapeGroup, rng: random.Random) -> list[tuple[float, float]]:
    """Centres of the group's shapes: evenly spaced along the long side of its half image."""
    radius = RADII[group.size]
    across = {"left": 16, "right": 48, "top": 16, "bottom": 48, "center": 32}[group.position]
    spacing = 64 / group.count
    # Shapes of a group must not touch, and must stay inside their half of the image.
    along_slack = min(3.0, max(0.0, spacing / 2 - radius - 0.5))
    centers = []
    for i in range(group.count):
        along = (i + 0.5) * spacing + rng.uniform(-along_slack, along_slack)
        side = across + rng.uniform(-3.0, 3.0)
        centers.append((side, along) if group.position in ("left", "right") else (along, side))
    return centers


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.85 * r  # a square as wide as the circle looks larger; match areas roughly
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        outer = 1.15 * r
        cy += outer / 4  # centre the bounding box, not the centroid
        draw.polygon([_polar(cx, cy, outer, angle) for angle in (-90, 30, 150)], fill=fill)
    elif shape == "star":
        points = [_polar(cx, cy, 1.2 * r if k % 2 == 0 else 0.5 * r, -90 + 36 * k) for k in range(10)]
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        t = 0.33 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _polar(cx: float, cy: float, r: float, degrees: float) -> tuple[float, float]:
    return cx + r * math.cos(math.radians(degrees)), cy + r * math.sin(math.radians(degrees))
