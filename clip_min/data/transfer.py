"""Zero-shot transfer: does the fine-tuned CLIP still classify images it was never trained on?

A task is a list of images with integer labels and the class names. The prediction for an
image is the class whose prompt ("An image of {class}") has the highest cosine with it, and
the score is macro-F1 (Appendix C). The paper's three tasks come in three released layouts,
each with a reader here; :func:`read_task` tells them apart. The toy world writes its tasks in
Food-101's layout.

    Food-101    meta/classes.txt, meta/<split>.txt, images/<class>/<id>.jpg
    CIFAR-100   cifar-100-python/{train,test,meta}: pickled dicts, the images as uint8 arrays
    ImageNet    val/<synset>/<image>.JPEG, one folder per class, names in LOC_synset_mapping.txt
"""

from __future__ import annotations

import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .concadia import DataError
from ..files import UnreadableFile, inside, open_whole, read_text_whole
from ..train.features import encode_arrays, encode_images
from ..metrics import macro_f1
from ..model import CLIP
from ..sorted_parts import in_sorted_parts
from ..tokenizer import tokenize

# The paper's text says "An image of ___"; the authors' code used the other two.
PROMPTS = {
    "paper": "An image of {}",
    "photo": "a photo of a {}",
    "picture": "A picture of {}",
}
# "authors": each task's prompt in the released code, on the class names as the task ships them
# (Food-101's underscores kept, ImageNet's first synonym): food101.py and imagenet1k.py
# "A picture of {}", cifar100.py "a photo of a {}".
AUTHORS_PROMPTS = {"food101": PROMPTS["picture"], "imagenet": PROMPTS["picture"], "cifar100": PROMPTS["photo"]}
PROMPT_CHOICES = (*PROMPTS, "authors")
# The longest list a task ships, Food-101's meta/train.txt, is 75,750 lines (about 2 MB).
MAX_LIST_BYTES = 256 << 20
# CIFAR-100's largest pickle, train, is 50,000 images of 3,072 bytes: 155 MB.
MAX_CIFAR_BYTES = 1 << 30


@dataclass(frozen=True)
class TransferTask:
    """A zero-shot classification task: images, their labels, and the class names."""

    name: str
    classes: list[str]  # class names as they go into the prompt
    image_paths: list[Path]  # empty when the images are held in ``pixels``
    labels: list[int]  # index into classes, one per image
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, H, W, 3) uint8 (CIFAR)
    layout: str = "food101"  # the released layout it was read from: food101, cifar100 or imagenet
    raw_classes: list[str] | None = None  # the class names exactly as the release spells them; None: as classes
    skipped: Counter = field(default_factory=Counter, compare=False)  # reason -> list entries left out


def class_prompts(task: TransferTask, prompt: str) -> list[str]:
    """One prompt per class: a PROMPTS template on the readable names, the authors' per-task one, or a template."""
    if prompt == "authors":
        return [AUTHORS_PROMPTS[task.layout].format(name) for name in task.raw_classes or task.classes]
    template = PROMPTS.get(prompt, prompt)
    return [template.format(name) for name in task.classes]


def read_food101_layout(root: str | Path, split: str = "test", name: str | None = None) -> TransferTask:
    """Read Food-101's released layout: meta/classes.txt, meta/<split>.txt, images/<class>/<id>.jpg."""
    root = Path(root)
    classes_file, split_file = root / "meta" / "classes.txt", root / "meta" / f"{split}.txt"
    for needed in (classes_file, split_file):
        if not os.path.lexists(needed):
            raise DataError(f"{root} is not a Food-101-style task folder: {needed} is missing")
    folders = [line.strip() for line in read_text(classes_file).splitlines() if line.strip()]
    check_unique_classes(folders, classes_file)
    index = {folder: i for i, folder in enumerate(folders)}
    paths, labels, skipped = [], [], Counter()
    for line in read_text(split_file).splitlines():
        entry = line.strip()
        if not entry:
            continue
        folder = entry.split("/", 1)[0]
        if folder not in index:
            raise DataError(f"{split_file}: {entry!r} names class {folder!r}, which classes.txt does not list")
        path = inside(root / "images", f"{entry}.jpg")
        if path is None:
            skipped["unsafe path"] += 1
            continue
        paths.append(path)
        labels.append(index[folder])
    classes = [folder.replace("_", " ") for folder in folders]
    return finished_task(TransferTask(name or root.name, classes, paths, labels, layout="food101", raw_classes=folders,
                                      skipped=skipped), split_file)


def read_task(path: str | Path, split: str = "test") -> TransferTask:
    """Read a task folder in any of the three released layouts, told apart by their files."""
    layout, root = task_layout(path)
    if layout == "food101":
        return read_food101_layout(root, split, name=Path(path).name)
    if layout == "cifar100":
        return read_cifar100(root, split)
    return read_imagenet_layout(root)


def task_layout(path: str | Path) -> tuple[str, Path]:
    """Which released layout a task folder is in (food101, cifar100 or imagenet), and the folder that holds it."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"transfer task folder not found: {path}")
    for root in (path, path / "food-101"):
        if os.path.lexists(root / "meta" / "classes.txt"):
            return "food101", root
    for root in (path, path / "cifar-100-python"):
        if (root / "meta").is_file():
            return "cifar100", root
    if any(SYNSET.fullmatch(child.name) for child in path.iterdir() if child.is_dir()):
        return "imagenet", path
    raise DataError(
        f"{path}: not a transfer task folder in a known layout; expected Food-101's meta/classes.txt, "
        "CIFAR-100's cifar-100-python/{test,meta}, or ImageNet's n01440764/-style class folders"
    )


def read_cifar100(root: str | Path, split: str = "test", name: str = "cifar100") -> TransferTask:
    """Read the CIFAR-100 python release: ``<split>`` and ``meta``, pickles of dicts with bytes keys.

    b"data" is uint8 (N, 3072): per image the 1024 red values, then green, then blue, each a
    32 x 32 image in row-major order. Labels are b"fine_labels", names meta's b"fine_label_names".
    """
    root = Path(root)
    data_file, meta_file = root / split, root / "meta"
    if not os.path.lexists(data_file):
        raise DataError(f"{root} is a CIFAR-100 folder without the split file {split!r}; use --split test or train")
    batch, meta = load_cifar_pickle(data_file), load_cifar_pickle(meta_file)
    if not isinstance(batch, dict) or not {b"data", b"fine_labels"} <= batch.keys():
        raise DataError(f"{data_file}: not a CIFAR-100 batch (a dict with b'data' and b'fine_labels'); re-download it")
    if not isinstance(meta, dict) or b"fine_label_names" not in meta:
        raise DataError(f"{meta_file}: not CIFAR-100's meta file (a dict with b'fine_label_names'); re-download it")
    data, labels, names = batch[b"data"], batch[b"fine_labels"], meta[b"fine_label_names"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{data_file}: b'data' is not a uint8 array of shape (N, 3072); re-download it")
    if not isinstance(labels, list):
        raise DataError(f"{data_file}: b'fine_labels' is a {type(labels).__name__}, not a list of class numbers; re-download it")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{meta_file}: b'fine_label_names' is not a list of names; re-download CIFAR-100's meta file")
    if len(labels) != len(data):
        raise DataError(f"{data_file}: {len(data)} images but {len(labels)} labels; re-download it")
    try:
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError:
        raise DataError(f"{meta_file}: b'fine_label_names' holds a name that is not UTF-8 text; re-download it") from None
    if not names:
        raise DataError(f"{meta_file}: b'fine_label_names' lists no classes; re-download CIFAR-100's meta file")
    check_unique_classes(names, meta_file)
    if not labels:
        raise DataError(f"{data_file}: no images; a transfer task needs images to classify, re-download it")
    # A label outside the class list would count as a misclassification of a class that is not there.
    outside = [label for label in labels
               if not (isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(names))]
    if outside:
        raise DataError(f"{data_file}: {len(outside)} label(s) outside the {len(names)} classes of meta "
                        f"(first {outside[0]!r}); the split and meta files do not belong together, re-download them")
    pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3, 32, 32) -> (N, 32, 32, 3)
    classes = [n.replace("_", " ") for n in names]
    return TransferTask(name, classes, [], [int(label) for label in labels], np.ascontiguousarray(pixels),
                        layout="cifar100", raw_classes=names)


try:  # numpy 2 renamed numpy.core to numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:
    from numpy.core.multiarray import _reconstruct


def _plain_dtype(*args):
    """numpy.dtype, for plain numbers only: an object array would be filled with whatever the pickle builds."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an array of Python objects ({dtype}) is not allowed")
    return dtype


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, and nothing else.

    Unpickling calls whatever callables a file names, so ``pickle.load`` on a downloaded file
    can run any code. The CIFAR pickles hold plain containers plus numpy arrays, and an array
    is rebuilt by calling exactly three globals: ``_reconstruct`` (from ``numpy.core.multiarray``
    in files written before numpy 2, as the released ones were, ``numpy._core.multiarray``
    after), the ``ndarray`` class it is handed, and ``dtype``. Every other global is refused.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return self.ALLOWED[module, name]


def load_cifar_pickle(path: Path) -> object:
    """Unpickle one CIFAR file with :class:`CifarUnpickler`; Python 2 strings become bytes, as released."""
    try:
        with open_whole(path, MAX_CIFAR_BYTES, "CIFAR-100 file") as file:
            return CifarUnpickler(file, encoding="bytes").load()
    except UnreadableFile as err:
        raise DataError(str(err)) from None
    except RecursionError:
        raise DataError(f"{path}: a pickle nested too deeply to be CIFAR-100's; re-download it") from None
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: refused or unreadable pickle ({err}); a CIFAR-100 file needs only numpy arrays, so re-download it") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err}); re-download it") from None


SYNSET = re.compile(r"n\d{8}")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def read_imagenet_layout(root: str | Path, name: str = "imagenet") -> TransferTask:
    """Read ImageNet's validation set sorted into one folder per synset (n01440764/, ...).

    Classes are the synsets of LOC_synset_mapping.txt (in the folder or its parent), in file
    order; a line is "n01440764 tench, Tinca tinca" and the prompt takes the first name, "tench".
    """
    root = Path(root)
    mapping = next((p for p in (root / SYNSET_MAPPING, root.parent / SYNSET_MAPPING) if p.is_file()), None)
    if mapping is None:
        raise DataError(f"{root}: ImageNet class folders but no {SYNSET_MAPPING} in it or its parent; put the file from the ILSVRC release there")
    synsets, classes = [], []
    for number, line in enumerate(read_text(mapping).splitlines(), 1):
        if not line.strip():
            continue
        synset, _, names = line.strip().partition(" ")
        if not SYNSET.fullmatch(synset) or not names.strip():
            raise DataError(f"{mapping}:{number}: expected 'n01440764 tench, Tinca tinca', got {line.strip()!r}")
        synsets.append(synset)
        classes.append(names.split(",")[0].strip())
    check_unique_classes(synsets, mapping)
    index = {synset: i for i, synset in enumerate(synsets)}
    paths, labels, skipped = [], [], Counter()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and SYNSET.fullmatch(p.name)):
        if folder.name not in index:
            raise DataError(f"{folder}: synset {folder.name} is not in {mapping}; use the mapping file of the same release")
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            path = inside(root, f"{folder.name}/{image.name}")  # a symlink may point out of the folder
            if path is None:
                skipped["unsafe path"] += 1
                continue
            paths.append(path)
            labels.append(index[folder.name])
    if not paths and not skipped:
        raise DataError(f"{root}: the class folders hold no .JPEG/.jpg/.png images")
    return finished_task(TransferTask(name, classes, paths, labels, layout="imagenet", skipped=skipped), root)


def read_text(path: Path) -> str:
    try:
        return read_text_whole(path, MAX_LIST_BYTES, "task list")
    except UnreadableFile as err:
        raise DataError(str(err)) from None


def check_unique_classes(classes: list[str], where: Path) -> None:
    """Refuse a class listed twice: its images would be split between two labels of one name."""
    seen = set()
    for name in classes:
        if name in seen:
            raise DataError(f"{where}: the class {name!r} is listed twice; each class once, as released")
        seen.add(name)


def finished_task(task: TransferTask, where: Path) -> TransferTask:
    """Note what was left out, and refuse a task with no image left to classify."""
    for reason, n in task.skipped.items():
        print(f"transfer task {task.name}: left out {n} image(s) with an {reason} (it leaves the task folder)")
    if not task.labels:
        raise DataError(f"{where}: the task lists no usable image ({sum(task.skipped.values())} left out); "
                        "a transfer task needs images to classify")
    return task


def encode_task(model: CLIP, task: TransferTask, weights_id: str, device: str = "cpu", autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached image features (N, embed_dim) of a task and the mask (N,) of images that decoded."""
    desc = f"encoding {task.name} images"
    if task.pixels is not None:
        return encode_arrays(model, task.pixels, weights_id, device=device, autocast=autocast, desc=desc)
    return encode_images(model, task.image_paths, weights_id, device=device, autocast=autocast, desc=desc)


@torch.no_grad()
def class_text_features(model: CLIP, classes: list[str], template: str, device: str = "cpu") -> torch.Tensor:
    """Normalised text features (n_classes, embed_dim) of the class prompts."""
    tokens = tokenize([template.format(c) for c in classes], model.config.context_length).to(device)
    return F.normalize(in_sorted_parts(model.encode_text, tokens).float(), dim=-1)


def zero_shot_f1(image_features: torch.Tensor, labels: list[int], class_features: torch.Tensor) -> float:
    """Macro-F1 of argmax_c cos(image, prompt_c) over the task's images."""
    predictions = (F.normalize(image_features.float(), dim=-1) @ class_features.T).argmax(dim=-1)
    return macro_f1(np.asarray(labels), predictions.cpu().numpy(), class_features.shape[0])
