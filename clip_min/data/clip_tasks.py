"""Two of CLIP's own zero-shot tasks, in the layouts OpenAI released them (openai/CLIP, data/):
Rendered SST2 and Country211. The authors' release scores both after training (sst2.py,
country211.py); each reader gives a ``TransferTask`` for clip_min/data/transfer.py's zero-shot F1.

    rendered-sst2/<split>/{negative,positive}/<id>.png     split: train, valid, test
    country211/<split>/<code>/<id>.jpg                     code: the country's ISO 3166 alpha-2

Country211's folders name countries by code; a prompt needs the name, which comes from an
ISO 3166 table with the columns "name" and "alpha-2" (the release reads the all.csv of
lukes/ISO-3166-Countries-with-Regional-Codes). A code the table lacks keeps the code as its
name and is counted (the release names every such class "Namibia", a patch for pandas reading
Namibia's code "NA" as missing).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path

from ..files import UnreadableFile, inside, read_text_whole
from ..tokenizer import empty_once_cleaned
from .concadia import DataError
from .transfer import TransferTask, finished_task

SPLITS = ("train", "valid", "test")
SST2_CLASSES = ("negative", "positive")  # label 0 and 1, as torchvision's RenderedSST2
COUNTRY_CODE = re.compile(r"[A-Z]{2}")
# The prompts of the release's sst2.py and country211.py, one per class.
RELEASE_PROMPTS = {"sst2": "A picture of text with {} sentiment", "country211": "A picture of the country of {}"}
# lukes' all.csv is about 50 kB for 249 countries; a table a thousand times that is not one.
MAX_TABLE_BYTES = 64 << 20


def release_folder(path: Path, name: str, split: str) -> Path:
    """``path`` itself or its ``name``/ subfolder, whichever holds the split's folder."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    for root in (path, path / name):
        if (root / split).is_dir():
            return root
    raise DataError(f"{path}: no {split}/ folder in it or in {name}/; pass the folder {name}.tgz unpacks")


def class_images(folder: Path, root: Path, suffixes: tuple[str, ...], skipped: Counter) -> list[Path]:
    """The images of one class folder, sorted; a name that leads out of ``root`` is counted, not read."""
    paths = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes):
        path = inside(root, f"{folder.name}/{image.name}")  # a symlink may point out of the folder
        if path is None:
            skipped["unsafe path"] += 1
        else:
            paths.append(path)
    return paths


def read_rendered_sst2(path: str | Path, split: str = "test") -> TransferTask:
    """Rendered SST2: sentences of the Stanford Sentiment Treebank drawn as images, negative or positive."""
    root = release_folder(Path(path), "rendered-sst2", split) / split
    paths, labels, skipped = [], [], Counter()
    for label, name in enumerate(SST2_CLASSES):
        if not (root / name).is_dir():
            raise DataError(f"{root}: no {name}/ folder; Rendered SST2 has one folder per class, negative and positive")
        found = class_images(root / name, root, (".png",), skipped)
        paths += found
        labels += [label] * len(found)
    return finished_task(TransferTask("rendered-sst2", list(SST2_CLASSES), paths, labels, layout="sst2",
                                      skipped=skipped), root)


def read_country_names(path: str | Path) -> dict[str, str]:
    """ISO 3166 alpha-2 code -> country name, from a CSV with the columns "name" and "alpha-2".

    A row whose name is empty once cleaned (a prompt would name nothing) is left out: its code
    keeps the code as its name, and is counted with the codes the table lacks.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise DataError(f"country table not found: {path}; pass --names an ISO 3166 CSV with the columns name and "
                        "alpha-2 (lukes/ISO-3166-Countries-with-Regional-Codes, all/all.csv)")
    try:
        reader = csv.DictReader(io.StringIO(read_text_whole(path, MAX_TABLE_BYTES, "country table"), newline=""))
        if not {"name", "alpha-2"} <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: no 'name' and 'alpha-2' columns; pass an ISO 3166 table such as "
                            "lukes/ISO-3166-Countries-with-Regional-Codes' all/all.csv")
        return {row["alpha-2"].strip(): row["name"].strip() for row in reader
                if row["alpha-2"] and row["name"] and not empty_once_cleaned(row["name"])}
    except UnreadableFile as err:
        raise DataError(str(err)) from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None


def read_country211(path: str | Path, names: dict[str, str], split: str = "test") -> TransferTask:
    """Country211: 211 countries, one folder each by ISO code, classes in the order of their codes."""
    root = release_folder(Path(path), "country211", split) / split
    codes = sorted(p.name for p in root.iterdir() if p.is_dir() and COUNTRY_CODE.fullmatch(p.name))
    if not codes:
        raise DataError(f"{root}: no country folders (two capital letters, an ISO 3166 code, such as AD/)")
    paths, labels, skipped = [], [], Counter()
    for label, code in enumerate(codes):
        found = class_images(root / code, root, (".jpg", ".jpeg", ".png"), skipped)
        paths += found
        labels += [label] * len(found)
    unnamed = [code for code in codes if code not in names]
    if unnamed:
        print(f"country211: {len(unnamed)} of {len(codes)} codes are not in the country table ({', '.join(unnamed[:5])}"
              f"{', ...' if len(unnamed) > 5 else ''}); their prompts name the code")
    classes = [names.get(code, code) for code in codes]
    return finished_task(TransferTask("country211", classes, paths, labels, layout="country211", raw_classes=codes,
                                      skipped=skipped), root)
