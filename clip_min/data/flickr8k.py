"""Flickr8k-Expert (Hodosh et al. 2013): three experts' judgements of image-caption pairs, in its released files.

The authors' release correlates its score with these judgements (flickr8k.py, Kendall tau-c),
as CLIPScore did. The files, as Flickr8k_text.zip and Flickr8k_Dataset.zip unpack:

    Flickr8k.token.txt      one caption a line: "<image file>#<0-4>", a tab, the caption
    ExpertAnnotations.txt   one image-caption pair a line, tab-separated: the image file, the
                            caption's id ("<image file>#<0-4>", the caption of ANOTHER image as
                            often as not), then three experts' scores 1..4 (1: the caption does
                            not describe the image; 4: it describes it)
    Flicker8k_Dataset/      the images, by file name (the folder's name is spelled so)

Each expert's score is one judgement, so a pair counts three times. A pair whose caption is one
of its image's own five captions is left out and counted, as the SPICE and CLIPScore
evaluations do (CLIPScore's preprocessing wrote the flickr8k.json the release reads).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..files import UnreadableFile, inside, read_text_whole
from ..tokenizer import empty_once_cleaned
from .concadia import DataError

CAPTIONS_FILE = "Flickr8k.token.txt"
EXPERT_FILE = "ExpertAnnotations.txt"
IMAGES_FOLDER = "Flicker8k_Dataset"  # sic: the released zip's folder
TEXT_FOLDER = "Flickr8k_text"  # where the text files are when the zip was unpacked into a folder of its own
SCORES = range(1, 5)  # the experts' scale
CAPTION_ID = re.compile(r"(?P<image>[^#\t]+)#(?P<index>\d)")
# The released Flickr8k.token.txt is 3 MB and ExpertAnnotations.txt 0.3 MB; 64 MiB is room to spare.
MAX_TEXT_BYTES = 64 << 20


@dataclass(frozen=True)
class ExpertPair:
    """One image-caption pair and its three experts' scores."""

    image: Path
    caption: str
    scores: tuple[int, int, int]  # 1..4 each


@dataclass
class Flickr8kExpert:
    pairs: list[ExpertPair]
    skipped: Counter = field(default_factory=Counter)  # reason -> pairs left out


def text_file(root: Path, name: str) -> Path:
    """``name`` in the folder, or in its Flickr8k_text/ (as the zip unpacks into a folder of its own)."""
    for candidate in (root / name, root / TEXT_FOLDER / name):
        if os.path.lexists(candidate):  # whatever is there is read by read_text_whole, which names what it is not
            return candidate
    raise DataError(f"{name} is in neither {root} nor {root / TEXT_FOLDER}; pass --data the folder where "
                    "Flickr8k_text.zip was unpacked")


def read_lines(path: Path) -> list[str]:
    try:
        return read_text_whole(path, MAX_TEXT_BYTES, f"Flickr8k file {path.name}").splitlines()
    except UnreadableFile as err:
        raise DataError(str(err)) from None


def read_captions(path: Path) -> dict[str, str]:
    """Caption id ("<image file>#<0-4>") -> caption, from Flickr8k.token.txt."""
    captions = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        caption_id, tab, caption = line.partition("\t")
        if not tab or not CAPTION_ID.fullmatch(caption_id):
            raise DataError(f"{path}, line {number}: expected '<image>.jpg#<0-4>', a tab and the caption; "
                            "is this the released Flickr8k.token.txt?")
        captions[caption_id] = caption.strip()
    return captions


def read_flickr8k_expert(root: str | Path, images: str | Path | None = None) -> Flickr8kExpert:
    """The expert-judged pairs whose caption and image are there; the others counted by reason."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Flickr8k folder not found: {root}")
    images = Path(images) if images is not None else root / IMAGES_FOLDER
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}; pass --images the folder Flickr8k_Dataset.zip unpacks "
                        f"({IMAGES_FOLDER}/)")
    captions = read_captions(text_file(root, CAPTIONS_FILE))
    own: dict[str, set[str]] = {}  # image file -> its own reference captions
    for caption_id, caption in captions.items():
        own.setdefault(caption_id.partition("#")[0], set()).add(caption)
    expert_file = text_file(root, EXPERT_FILE)
    result = Flickr8kExpert([])
    for number, line in enumerate(read_lines(expert_file), start=1):
        if not line.strip():
            continue
        cells = line.strip().split("\t")
        try:
            image, caption_id, *scores = cells
            scores = tuple(int(s) for s in scores)
        except ValueError:
            scores = ()
        if len(cells) != 5 or not all(s in SCORES for s in scores):
            raise DataError(f"{expert_file}, line {number}: expected the image, the caption id and three scores "
                            "1 to 4, tab-separated; is this the released ExpertAnnotations.txt?")
        if caption_id not in captions:
            result.skipped[f"pairs whose caption id is not in {CAPTIONS_FILE}"] += 1
        elif empty_once_cleaned(captions[caption_id]):
            result.skipped["pairs whose caption is empty once cleaned"] += 1
        elif captions[caption_id] in own.get(image, ()):
            result.skipped["pairs whose caption is one of the image's own (left out, as SPICE and CLIPScore do)"] += 1
        elif (path := inside(images, image)) is None:
            result.skipped["pairs whose image name leaves the image folder"] += 1
        elif not path.is_file():
            result.skipped[f"pairs whose image is missing from {images}"] += 1
        else:
            result.pairs.append(ExpertPair(path, captions[caption_id], scores))
    if not result.pairs:
        raise DataError(f"{expert_file}: no judged pair has both its caption and its image "
                        f"({sum(result.skipped.values())} left out)")
    return result
