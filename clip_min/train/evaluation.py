"""Evaluation while training: the Concadia splits and the transfer tasks, ready for the text tower.

The images' features are computed once (``clip_min.train.features``); an evaluation runs only the
text tower: preference accuracy on a split (C(im, des) > C(im, cap)) and zero-shot macro-F1 on
each transfer task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.concadia import DataError, Example, read_concadia
from ..data.transfer import TransferTask, class_prompts, class_text_features, encode_task, read_task, zero_shot_f1
from ..files import open_whole
from ..images import MAX_IMAGE_BYTES
from ..losses import score
from ..metrics import preference_accuracy
from ..model import CLIP
from ..sorted_parts import in_sorted_parts
from ..tokenizer import get_tokenizer
from .features import encode_images, encode_now


@dataclass
class Split:
    """A split ready for the text tower: image features and the two texts' token ids."""

    examples: list[Example]
    image_features: torch.Tensor  # (N, embed_dim), from the frozen vision tower
    descriptions: torch.Tensor  # (N, context) token ids
    captions: torch.Tensor  # (N, context) token ids


def load_split(model: CLIP, data: Path, images: str | None, split: str, weights_id: str, device: str, autocast) -> Split:
    """Read a Concadia split, encode its images (cached), tokenize its texts; report what was skipped."""
    examples, skips = read_concadia(data, split, images)
    features, ok = encode_images(model, [e.image_path for e in examples], weights_id, device=device,
                                 autocast=autocast, desc=f"encoding {split} images")
    if not ok.all():
        skips.add("undecodable image", int((~ok).sum()))
        keep = ok.nonzero().squeeze(1).tolist()
        examples, features = [examples[i] for i in keep], features[ok]
    if not examples:
        raise DataError(f"no usable records in split {split!r} of {data}: {skips.summary()}")
    print(f"{split}: {len(examples)} images; {skips.summary()}")
    context = model.config.context_length
    texts = [e.description for e in examples] + [e.caption for e in examples]
    tokens, cut = get_tokenizer().tokenize_counting_cuts(texts, context)  # (2N, context)
    if cut:
        print(f"{split}: {cut} texts longer than {context} tokens were cut to {context}")
    descriptions, captions = tokens.chunk(2)
    return Split(examples, features, descriptions, captions)


def sample_split(split: Split, n: int, seed: int) -> Split:
    """``n`` of the split's images drawn once without replacement from ``seed`` (all of them when n is 0 or the split has no more)."""
    if n == 0 or n >= len(split.examples):
        return split
    # numpy's RandomState(seed).choice is the call pandas' DataFrame.sample(n, random_state=seed) makes.
    rows = torch.from_numpy(np.random.RandomState(seed).choice(len(split.examples), size=n, replace=False).astype(np.int64))
    print(f"validation: {n} of {len(split.examples)} images, drawn once with seed {seed} (--val-images)")
    return Split([split.examples[i] for i in rows.tolist()], split.image_features[rows], split.descriptions[rows],
                 split.captions[rows])


def split_digest(examples: list[Example]) -> str:
    """SHA-256 of a split's records (file name and texts) and of each image's bytes.

    A checkpoint keeps the training split's, and a resume with other data is refused: the same
    number of records with other texts or other pictures would go on training another run.
    Reading every image costs a pass over the files (Concadia's training images are about 2 GB);
    the file's size and times would not tell a copy with other pixels.
    """
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.filename, e.description, e.caption]).encode())
        with open_whole(e.image_path, MAX_IMAGE_BYTES, "image") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return "sha256:" + digest.hexdigest()


@torch.no_grad()
def split_scores(model: CLIP, split: Split, device: str, autocast, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """C(im, des) and C(im, cap) for every image of a split, each (N,)."""
    c_des, c_cap = [], []
    for start in range(0, len(split.examples), batch_size):
        rows = slice(start, start + batch_size)
        image = split.image_features[rows].to(device)
        texts = torch.cat([split.descriptions[rows], split.captions[rows]]).to(device)
        with autocast():
            des, cap = in_sorted_parts(model.encode_text, texts).float().chunk(2)
        c_des.append(score(image, des, model.logit_scale).cpu())
        c_cap.append(score(image, cap, model.logit_scale).cpu())
    return torch.cat(c_des), torch.cat(c_cap)


def split_accuracy(model: CLIP, split: Split, device: str, autocast) -> float:
    c_des, c_cap = split_scores(model, split, device, autocast)
    return preference_accuracy(c_des=c_des, c_cap=c_cap)


@dataclass
class TaskData:
    task: TransferTask  # only the images that decoded
    image_features: torch.Tensor  # (N, embed_dim)


def load_tasks(model: CLIP, folders, weights_id: str, device: str, autocast) -> list[TaskData]:
    loaded = []
    for folder in folders:
        task = read_task(folder)
        features, ok = encode_task(model, task, weights_id, device, autocast)
        if not ok.all():
            print(f"transfer task {task.name}: {int((~ok).sum())} of {len(ok)} images did not decode and are left out")
        good = ok.tolist()
        kept = replace(task, labels=[label for label, g in zip(task.labels, good) if g],
                       image_paths=[path for path, g in zip(task.image_paths, good) if g],
                       pixels=None if task.pixels is None else task.pixels[ok.numpy()])
        loaded.append(TaskData(kept, features[ok]))
    return loaded


def refresh_image_features(model: CLIP, splits: list[Split], tasks: list[TaskData], device: str, autocast) -> None:
    """With --towers both the vision tower trains: encode the evaluation images again with it as it is now."""
    for split in splits:
        split.image_features, _ = encode_now(model, [e.image_path for e in split.examples], device=device,
                                             autocast=autocast, desc="encoding images with the training vision tower")
    for data in tasks:
        data.image_features, _ = encode_now(model, data.task.image_paths, data.task.pixels, device=device,
                                            autocast=autocast, desc="encoding images with the training vision tower")


@torch.no_grad()
def transfer_f1(model: CLIP, tasks: list[TaskData], prompt: str, device: str, autocast) -> dict[str, float]:
    """Zero-shot macro-F1 per task; ``prompt`` names a prompt of transfer.PROMPT_CHOICES or is a template."""
    scores = {}
    for data in tasks:
        with autocast():
            classes = class_text_features(model, class_prompts(data.task, prompt), "{}", device)
        scores[data.task.name] = zero_shot_f1(data.image_features.to(device), data.task.labels, classes)
    return scores


def measure(model: CLIP, split: Split, tasks: list[TaskData], prompt: str, device: str, autocast) -> dict:
    """Test preference accuracy and transfer F1 of the model as it is."""
    return dict(accuracy=split_accuracy(model, split, device, autocast),
                transfer_f1=transfer_f1(model, tasks, prompt, device, autocast))


def rounded(value: float | None) -> str:
    """A score to three decimals, or None when there is none (no transfer tasks)."""
    return str(value) if value is None else f"{value:.3f}"


def fmt(f1: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in f1.items()) or "(no transfer tasks)"
