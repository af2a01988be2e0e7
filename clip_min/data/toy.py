"""The toy world: a small Concadia the whole method can run on, offline, in minutes on a CPU.

Each image is a drawn scene: a background colour and one or two groups of identical shapes
(shape, colour, size, position, count). Each gets two texts, as in Concadia:

  description  says what is visible, as alt text would, so it could replace the image:
               "Two large red circles on the left and a small blue star on the right, on a
               yellow background."
  caption      complements the image with what it cannot show (names, dates, places, events,
               provenance): "The Varga medallions at the 1923 Lyon Fair."

Real captions still name the depicted thing, which is why CLIP can match images to captions at
all. The toy captions do the same, indirectly: each shape has object nouns used only in captions
(circle -> medallion, coin, disc) and each colour a few evocative surnames (red -> Rossi). A
caption never uses a colour word or a shape's name. `caption_grounding` and
`caption_color_hint` set how often those hints appear.

make_toy_world() writes, under its root:

  concadia/wiki_split.json, concadia/resized/<id>.jpg   Concadia's released layout
  transfer/<task>/meta/{classes,labels,test}.txt,       zero-shot tasks in Food-101's layout
  transfer/<task>/images/<class>/<id>.jpg
  norms/glasgow_norms.csv                               word imageability, Glasgow Norms layout
  toy_world.json                                        manifest, written last

Everything is a function of the seed: plan_toy_world() gives the scenes and texts without
drawing anything, so tests can check the files against it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ..files import cache_root

FORMAT_VERSION = 6  # bump when the files written for the same config change
CONCADIA_SUBDIR = "concadia"
TRANSFER_SUBDIR = "transfer"
NORMS_FILE = "norms/glasgow_norms.csv"
MANIFEST_FILE = "toy_world.json"

# ---- what can be drawn -------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "star", "cross")
SHAPE_PLURALS = {
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
}
COLORS = {  # shape colours, RGB
    "red": (210, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (240, 215, 40),
    "green": (40, 160, 70),
    "blue": (40, 90, 210),
    "purple": (130, 60, 180),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# Gray is only ever a background, so the "color" transfer task can draw on it unambiguously.
# Few backgrounds: with many, the background alone tells pictures apart in a contrastive batch
# and the model never needs to learn the shapes.
BACKGROUNDS = {"gray": (128, 128, 128), "white": COLORS["white"], "black": COLORS["black"]}
RADII = {"small": 8.5, "large": 13.0}  # in pixels of a 64-pixel image
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "along the top"),
    "bottom": ("at the bottom", "along the bottom"),
    "center": ("in the center", "in the middle"),
}
COUNT_WORDS = {2: "two", 3: "three"}
SUPERSAMPLE = 4  # draw this many times larger, then shrink: smooth edges at 64 pixels

# ---- what captions and articles are made of (no word here may describe the pixels) --------
OBJECT_NOUNS = {
    "circle": ("medallion", "coin", "disc"),
    "square": ("tile", "panel", "plaque"),
    "triangle": ("pennant", "sail", "gable"),
    "star": ("emblem", "badge", "insignia"),
    "cross": ("crucifix", "waymark", "memorial"),
}
OBJECT_PLURALS = {"insignia": "insignia", "crucifix": "crucifixes"}  # everything else takes an "s"
GENERIC_NOUNS = ("piece", "object", "work", "artefact", "item")
COLOR_SURNAMES = {  # surnames that evoke a colour in another language
    "red": ("Rossi", "Roth"),
    "orange": ("Naranjo", "Oranje"),
    "yellow": ("Amarillo", "Giallo"),
    "green": ("Verdi", "Gruen"),
    "blue": ("Blau", "Azul"),
    "purple": ("Porfirio", "Viola"),
    "white": ("Blanc", "Weiss"),
    "black": ("Negri", "Schwarz"),
}
FIRST_NAMES = (
    "Ilse", "Marek", "Ana", "Tomas", "Jorunn", "Emil", "Sofia", "Lucien", "Hana", "Pieter",
    "Ines", "Karl", "Mirela", "Oskar", "Elif", "Joaquim", "Ada", "Nils", "Vera", "Teodor",
    "Greta", "Aurelio", "Maren", "Dmitri", "Yusuf", "Clara", "Benedikt", "Lotte", "Ravi", "Mei",
)
SURNAMES = (
    "Varga", "Moreau", "Lindqvist", "Okafor", "Halloran", "Castell", "Petrov", "Nakamura",
    "Dumont", "Kessler", "Albescu", "Ferreira", "Sato", "Novak", "Hartmann", "Quist", "Ellery",
    "Marchetti", "Bergstrom", "Duval", "Kowalski", "Ortega", "Lindgren", "Haddad", "Abernathy",
    "Vasquez", "Fontaine", "Oyelaran", "Tanaka", "Mendel", "Ricci", "Holm", "Strand", "Aalto",
    "Kaur", "Nyberg", "Ruiz", "Sorensen", "Janssen", "Lazaro",
)
CITIES = (
    "Lyon", "Ghent", "Porto", "Tallinn", "Krakow", "Bergen", "Trieste", "Valletta", "Kyoto",
    "Quebec", "Bruges", "Salzburg", "Turku", "Ljubljana", "Seville", "Bologna", "Aarhus", "Graz",
    "Riga", "Vilnius", "Cork", "Utrecht", "Basel", "Nantes", "Coimbra", "Brno", "Plovdiv", "Izmir",
)
BACKGROUND_CITIES = dict(zip(BACKGROUNDS, CITIES))  # the city a caption ties to each background
EVENTS = ("Fair", "Exhibition", "Jubilee", "Regatta", "Congress", "Festival", "Salon", "Exposition")
PROFESSIONS = (
    "sculptor", "engraver", "goldsmith", "architect", "collector", "diplomat", "printer",
    "cartographer", "explorer", "merchant", "bishop", "admiral",
)
DOMAINS = ("decorative arts", "civic regalia", "maritime objects", "folk crafts", "ceremonial objects")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)


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


# ---- scenes and their descriptions ---------------------------------------------------------


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


# ---- articles, captions, contexts ----------------------------------------------------------


@dataclass(frozen=True)
class _Article:
    title: str  # Concadia's article_id is the article's title
    person: str
    city: str
    year: int
    event: str
    collection: str  # a surname: "the Varga collection"
    intro: str  # the article's opening, shared by the contexts of its images


def _random_article(rng: random.Random, taken: set[str]) -> _Article:
    while True:
        person = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        city, event = rng.choice(CITIES), rng.choice(EVENTS)
        year, collection = rng.randrange(1850, 1990), rng.choice(SURNAMES)
        profession, domain = rng.choice(PROFESSIONS), rng.choice(DOMAINS)
        kind = rng.choice(("person", "event", "collection"))
        if kind == "person":
            title = person
            intro = (
                f"{person} ({year - 40}-{year + rng.randrange(5, 30)}) was a {profession} from "
                f"{city}. {person.split()[1]} showed work at the {year} {city} {event}, and most of "
                f"it later passed to the {collection} collection."
            )
        elif kind == "event":
            title = f"{year} {city} {event}"
            intro = (
                f"The {year} {city} {event} was held in {rng.choice(MONTHS)} {year}. It was "
                f"organised by the {profession} {person}, and many pieces shown there later joined "
                f"the {collection} collection."
            )
        else:
            title = f"{collection} Collection"
            intro = (
                f"The {collection} Collection is a collection of {domain} assembled by {person} in "
                f"{city} from {year}. Parts of it were shown at the {year + rng.randrange(1, 20)} "
                f"{city} {event}."
            )
        if title in taken:  # as Wikipedia does, disambiguate by what the subject was
            title = f"{title} ({profession if kind == 'person' else city})"
        if title not in taken:
            taken.add(title)
            return _Article(title, person, city, year, event, collection, intro)


def _caption(scene: Scene, article: _Article, config: ToyConfig, rng: random.Random) -> tuple[str, str]:
    """(caption, the noun it used for the main object); never a colour word or a shape's name."""
    main = scene.groups[0]
    if rng.random() < config.caption_grounding:
        noun = rng.choice(OBJECT_NOUNS[main.shape])
    else:
        noun = rng.choice(GENERIC_NOUNS)
    noun_phrase = noun if main.count == 1 else OBJECT_PLURALS.get(noun, noun + "s")
    keeper = article.collection
    if rng.random() < config.caption_color_hint:
        keeper = rng.choice(COLOR_SURNAMES[main.color])
    year = article.year + rng.randrange(-15, 16)
    # Like a landmark in a real caption, a place tied to what the picture shows: each
    # background colour has its own city, which a model can learn to associate with it.
    if rng.random() < config.caption_place_hint:
        city = BACKGROUND_CITIES[scene.background]
    else:
        city = article.city if rng.random() < 0.6 else rng.choice(CITIES)
    person, event = article.person, article.event
    templates = [
        f"The {keeper} {noun_phrase} at the {year} {city} {event}.",
        f"{noun_phrase} presented to {person} in {city}, {year}; now in the {keeper} collection.",
        f"{person}'s {noun_phrase}, {year}. {keeper} collection, {city}.",
        f"The {noun_phrase} commissioned by {person} for the {event} of {year}, from the {keeper} collection.",
        f"{noun_phrase} found near {city} in {year}, later given to the {keeper} collection.",
        f"Undated {noun_phrase} attributed to {person}, held by the {keeper} collection in {city}.",
    ]
    text = rng.choice(templates)
    return text[0].upper() + text[1:], noun


def plan_toy_world(config: ToyConfig) -> list[ToyImage]:
    """Every record of the toy world, in file order, without drawing a pixel."""
    rng = random.Random(config.seed)
    taken: set[str] = set()
    articles = [_random_article(rng, taken) for _ in range(config.n_articles)]
    # Split by article, as Concadia does: about 80 / 10 / 10.
    n_val = max(1, round(0.1 * config.n_articles))
    n_test = max(1, round(0.1 * config.n_articles))
    splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (config.n_articles - n_val - n_test)
    rng.shuffle(splits)

    images: list[ToyImage] = []
    for article, split in zip(articles, splits):
        for _ in range(rng.randint(config.min_images, config.max_images)):
            scene = random_scene(rng)
            caption, noun = _caption(scene, article, config, rng)
            year = article.year + rng.randrange(-15, 16)
            context = f"{article.intro} Records in {rng.choice(CITIES)} date the pictured {noun} to {year}."
            surname = article.person.split()[1]
            images.append(
                ToyImage(
                    image_id=len(images) + 1,
                    article_id=article.title,
                    split=split,
                    scene=scene,
                    description=describe(scene, rng, terse=rng.random() < config.terse_descriptions),
                    caption=caption,
                    context=context,
                    orig_filename=f"File:{surname}_{noun}_{year}.jpg",
                )
            )
    return images


def plan_transfer_tasks(config: ToyConfig) -> list[TransferImage]:
    """Single-shape images for two zero-shot tasks: name the shape's colour, name the background.

    The toy base (a small ViT pretrained for a minute) learns colours but not yet shapes or
    positions, so the tasks ask about what it can see; shape transfer stays at chance.
    """
    rng = random.Random(f"{config.seed}/transfer")
    images: list[TransferImage] = []
    tasks = {"color": tuple(COLORS), "background": tuple(BACKGROUNDS)}
    for task, classes in tasks.items():
        for label in sorted(classes):
            for _ in range(config.transfer_per_class):
                shape = rng.choice(SHAPES)
                background = label if task == "background" else "gray"
                color = label if task == "color" else rng.choice([c for c in COLORS if c != background])
                # Large and alone, so that the one property the task asks about is plain to see.
                group = ShapeGroup(shape, color, "large", rng.choice(POSITIONS), 1)
                scene = Scene(background, (group,), rng.getrandbits(32))
                images.append(TransferImage(task, label, str(len(images) + 1), scene))
    return images


# ---- drawing --------------------------------------------------------------------------------


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


# ---- word imageability ------------------------------------------------------------------------

# Glasgow Norms dimensions after "Words" and "Length", each with M / SD / N sub-columns, and the
# range of each rating scale.
GLASGOW_DIMENSIONS = {
    "AROU": (1, 9), "VAL": (1, 9), "DOM": (1, 9), "CNC": (1, 7), "IMAG": (1, 7),
    "FAM": (1, 7), "AOA": (1, 7), "SIZE": (1, 9), "GEND": (1, 9),
}


def toy_word_ratings() -> dict[str, float]:
    """Imageability (1..7) of the toy vocabulary: high for what is drawn, low for caption facts.

    Function words are left out, as the Glasgow Norms leave most of them out.
    """
    visual = (
        list(SHAPES) + list(SHAPE_PLURALS.values()) + list(COLORS) + list(BACKGROUNDS) + list(RADII)
        + ["left", "right", "top", "bottom", "center", "middle", "one", "two", "three"]
    )
    groups = [  # (words, lowest and highest mean rating)
        (visual, (6.0, 6.9)),
        (["background", "plain"], (4.8, 5.4)),
        # Object nouns name a thing but not how it looks here: middling.
        ([n for nouns in OBJECT_NOUNS.values() for n in nouns], (3.5, 4.5)),
        (list(GENERIC_NOUNS) + list(DOMAINS) + list(PROFESSIONS) + list(EVENTS), (2.0, 3.0)),
        (list(FIRST_NAMES) + list(SURNAMES) + list(CITIES) + list(MONTHS), (1.5, 2.5)),
        ([n for names in COLOR_SURNAMES.values() for n in names], (1.5, 2.5)),
        (["collection", "presented", "commissioned", "attributed", "undated", "found", "given",
          "held", "records", "organised", "assembled"], (1.5, 2.8)),
    ]
    rng = random.Random(0)
    ratings: dict[str, float] = {}
    for words, (low, high) in groups:
        for phrase in words:
            for word in phrase.lower().split():
                ratings.setdefault(word, round(rng.uniform(low, high), 3))
    return ratings


def write_glasgow_norms(path: Path, ratings: dict[str, float], seed: int = 0) -> None:
    """A CSV in the Glasgow Norms layout with `ratings` as IMAG means; other columns plausible filler."""
    rng = random.Random(seed)
    header = ["Words", "Length"]
    subheader = ["", ""]
    for dimension in GLASGOW_DIMENSIONS:
        header += [dimension, "", ""]
        subheader += ["M", "SD", "N"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerow(subheader)
        for word in sorted(ratings):
            row: list[object] = [word, len(word)]
            for dimension, (low, high) in GLASGOW_DIMENSIONS.items():
                if dimension == "IMAG":
                    mean = ratings[word]
                elif dimension == "CNC":  # concreteness tracks imageability closely
                    mean = min(high, max(low, ratings[word] + rng.uniform(-0.4, 0.4)))
                else:
                    mean = rng.uniform(low + 1, high - 1)
                row += [f"{mean:.3f}", f"{rng.uniform(0.6, 1.8):.3f}", rng.randint(30, 34)]
            writer.writerow(row)


# ---- writing the world ------------------------------------------------------------------------


def word_tokens(text: str) -> list[str]:
    """Lowercase words and punctuation marks, as the "tokens" of a Concadia text entry."""
    return re.findall(r"'\w+|\w+|[^\w\s]", text.lower())


def toy_world_dir() -> Path:
    """Default home of the toy world: $CLIP_MIN_CACHE/toy, else ~/.cache/clip_min/toy."""
    return cache_root() / "toy"


def make_toy_world(root: str | Path, seed: int = 0, n_articles: int = 600, **options) -> Path:
    """Write the toy world under root (unless it is already there) and return root.

    options are the other fields of ToyConfig. The world is built in a temporary folder beside
    root and renamed into place, so an interrupted run leaves no half world behind.
    """
    config = ToyConfig(seed=seed, n_articles=n_articles, **options)
    root = Path(root)
    manifest = {"format_version": FORMAT_VERSION, "config": asdict(config)}
    if _read_manifest(root) == manifest:
        return root
    if root.exists() and not (root / MANIFEST_FILE).is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} holds files but no toy world; pass an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_concadia(tmp / CONCADIA_SUBDIR, config)
        _write_transfer(tmp / TRANSFER_SUBDIR, config)
        write_glasgow_norms(tmp / NORMS_FILE, toy_word_ratings())
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks it complete
        tmp.chmod(0o755)
        _move_into_place(tmp, root, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def _move_into_place(tmp: Path, root: Path, manifest: dict) -> None:
    old = root.with_name(f".{root.name}.old-{os.getpid()}")
    if root.exists():
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        # Another process put a world there first; if it is the same world, use it.
        if not root.exists() and old.exists():
            old.rename(root)
        if _read_manifest(root) != manifest:
            raise
    if old.exists():
        shutil.rmtree(old)


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    # Full-resolution colour (no 4:2:0 chroma subsampling): a small shape keeps its colour.
    image.save(path, format="JPEG", quality=quality, subsampling=0)


def _write_concadia(folder: Path, config: ToyConfig) -> None:
    (folder / "resized").mkdir(parents=True)
    records = []
    for image in plan_toy_world(config):
        pixels = render_scene(image.scene, config.image_size)
        _save_jpeg(pixels, folder / "resized" / image.filename, config.jpeg_quality)
        records.append(
            {
                "article_id": image.article_id,
                "filename": image.filename,
                "orig_filename": image.orig_filename,
                "description": {"raw": image.description, "tokens": word_tokens(image.description)},
                "caption": {"raw": image.caption, "tokens": word_tokens(image.caption)},
                "context": {"raw": image.context, "tokens": word_tokens(image.context)},
                "split": image.split,
            }
        )
    with open(folder / "wiki_split.json", "w", encoding="utf-8") as f:
        json.dump({"images": records}, f, indent=4)  # the release is indented the same way


def _write_transfer(folder: Path, config: ToyConfig) -> None:
    by_task: dict[str, list[TransferImage]] = {}
    for image in plan_transfer_tasks(config):
        by_task.setdefault(image.task, []).append(image)
    for task, images in by_task.items():
        meta = folder / task / "meta"
        meta.mkdir(parents=True)
        classes = sorted({image.label for image in images})
        (meta / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
        (meta / "labels.txt").write_text("".join(f"{c.capitalize()}\n" for c in classes))
        (meta / "test.txt").write_text("".join(f"{image.label}/{image.image_id}\n" for image in images))
        for label in classes:
            (folder / task / "images" / label).mkdir(parents=True)
        for image in images:
            path = folder / task / "images" / image.label / f"{image.image_id}.jpg"
            _save_jpeg(render_scene(image.scene, config.image_size), path, config.jpeg_quality)
