"""The toy world's settings and its records, before anything is written."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToyConfig:
    """Everything the toy world's files depend on; the manifest records it."""

    seed: int = 0  # one seed drives every choice, text and pixel
    n_articles: int = 600  # imaginary Wikipedia articles; splits are made by article
    min_images: int = 3  # images per article, uniform in [min_images, max_images]
    max_images: int = 7
    image_size: int = 64  # pixels per side of every image (RGB JPEG)
    jpeg_quality: int = 95
    caption_grounding: float = 0.95  # P(caption names the main shape with one of its object nouns)
    caption_color_hint: float = 0.9  # P(caption's collection is a surname evoking the main colour)
    caption_place_hint: float = 0.9  # P(caption's city is the one tied to the background colour)
    terse_descriptions: float = 0.6  # P(alt text names only the main shapes, colour and background)
    transfer_per_class: int = 50  # images per class in each transfer task

    def __post_init__(self):
        if self.n_articles < 3:
            raise ValueError(f"n_articles must be at least 3 (one per split), got {self.n_articles}")
        if not 1 <= self.min_images <= self.max_images:
            raise ValueError(f"need 1 <= min_images <= max_images, got {self.min_images}, {self.max_images}")
        for name in ("caption_grounding", "caption_color_hint"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")


@dataclass(frozen=True)
class ShapeGroup:
    """`count` identical shapes drawn side by side in one region of the image."""

    shape: str  # one of SHAPES
    color: str  # one of COLORS
    size: str  # "small" or "large"
    position: str  # one of POSITIONS; "center" holds a single shape
    count: int  # 1..3; a large group has at most 2


@dataclass(frozen=True)
class Scene:
    background: str  # one of BACKGROUNDS
    groups: tuple[ShapeGroup, ...]  # one or two; the first is the main object
    seed: int  # drives the pixel-level jitter of colours and positions


@dataclass(frozen=True)
class ToyImage:
    """One Concadia record of the toy world, before it is written."""

    image_id: int
    article_id: str
    split: str
    scene: Scene
    description: str
    caption: str
    context: str
    orig_filename: str

    @property
    def filename(self) -> str:
        return f"{self.image_id}.jpg"


@dataclass(frozen=True)
class TransferImage:
    """One image of a toy transfer task: a single shape, labelled by one visual property."""

    task: str
    label: str  # class name, a plain word: "circle", "red"
    image_id: str
    scene: Scene
