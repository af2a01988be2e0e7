"""What one training row is, and the rows an epoch goes through.

A behavioral row is one image with its caption and description (Eq. 1). An IIT-DAS row is, in
the paper recipe's ``iit_rows="pairs"``, one image with both directions of the intervention
(Eqs. 2 and 3 averaged); in the authors' ``"one-way"``, one direction only: the base caption with
the source description (Eq. 2, label 1) or the base description with the source caption (Eq. 3,
label 0), each triplet giving the two rows, shuffled one by one into unrelated batches.

The images of the IIT-DAS rows are the training split itself (``triplets="stream"``: the loop's
fresh permutation each pass, an epoch being ``iit_samples`` of them) or one fixed draw of
``iit_samples`` images with replacement from SAMPLE_SEED (``"fixed"``, run_iit_clip.py's), the same
for every seed and epoch; only the order of the rows follows the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import IIT_OBJECTIVES, SAMPLE_SEED, TrainConfig


@dataclass(frozen=True)
class TrainingRows:
    image: torch.Tensor  # (P,) each row's image, an index into the training split
    caption_base: torch.Tensor | None  # (P,) bool, one-way rows: the base is the caption (Eq. 2), else the description (Eq. 3)

    def __len__(self) -> int:
        return len(self.image)


def draw_triplets(n_images: int, count: int, seed: int) -> torch.Tensor:
    """``count`` image indices (count,) drawn with replacement from ``n_images``, the same for a given seed.

    Base and source of a triplet are one image's caption and description, so a draw of images is a
    draw of triplets. numpy's RandomState(seed).choice is the call pandas' DataFrame.sample(replace=True,
    random_state=seed) makes, the authors' draw.
    """
    return torch.from_numpy(np.random.RandomState(seed).choice(n_images, size=count, replace=True).astype(np.int64))


def training_rows(config: TrainConfig, n_images: int) -> TrainingRows:
    """The rows one pass goes through, before shuffling; ``config`` is resolved (defaults filled in)."""
    if config.objective not in IIT_OBJECTIVES:
        return TrainingRows(torch.arange(n_images), None)
    if config.triplets == "fixed":
        images = draw_triplets(n_images, config.iit_samples or n_images, SAMPLE_SEED)
    else:
        images = torch.arange(n_images)
    if config.iit_rows == "pairs":
        return TrainingRows(images, None)
    # Each triplet's two rows: its Eq. 2 row (base caption), then its Eq. 3 row (base description).
    return TrainingRows(images.repeat_interleave(2), torch.tensor([True, False]).repeat(len(images)))


def rows_per_epoch(config: TrainConfig, n_images: int) -> int:
    """Rows of one epoch: the split once, or (IIT-DAS, joint) iit_samples triplets, two rows each one-way."""
    if config.objective not in IIT_OBJECTIVES:
        return n_images
    triplets = config.iit_samples or n_images
    return triplets * (2 if config.iit_rows == "one-way" else 1)
