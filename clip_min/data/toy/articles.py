"""Imaginary articles, the captions and contexts of their images, and the plan of every record."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .records import Scene, ShapeGroup, ToyConfig, ToyImage, TransferImage
from .scenes import describe, random_scene
from .vocabulary import (BACKGROUND_CITIES, BACKGROUNDS, CITIES, COLOR_SURNAMES, COLORS, DOMAINS, EVENTS, FIRST_NAMES,
                         GENERIC_NOUNS, MONTHS, OBJECT_NOUNS, OBJECT_PLURALS, POSITIONS, PROFESSIONS, SHAPES, SURNAMES)


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
