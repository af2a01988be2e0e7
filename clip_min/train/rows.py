"""What one training row is, and the rows an epoch goes through.

A behavioral row is one image with its caption and description (Eq. 1). An IIT-DAS row is, in
the paper recipe's ``iit_rows="pairs"``, one image with both directions of the intervention
(Eqs. 2 and 3 averaged); in the authors' ``"one-way"``, one direction only: the base caption with
the source description (Eq. 2, label 1) or the base description with the source caption (Eq. 3,
label 0), each triplet giving the two rows, shuffled one by one into unrelated batches.

The images of the IIT-DAS rows are the training split itself (``triplets="stream"``: the loop's
permutation of it, an epoch being ``iit_samples`` of them) or one fixed draw of
``iit_samples`` images with replacement from SAMPLE_SEED (``"fixed"``, run_iit_clip.py's), the same
for every seed and epoch; only the order of the rows follows the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import IIT_OBJECTIVES, PAPER_DEFAULTS, SAMPLE_SEED, TrainConfig


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


# The paper's 100,000 triplets an epoch are 1.3 per image of Concadia's training split; an epoch of
# more than 100 per image shows each triplet a hundred times over, and the authors' fixed draw of
# them (triplets="fixed") is held in memory whole. The paper's number itself is always allowed, so
# that the recipes' default runs on a small data set too.
MAX_TRIPLETS_PER_IMAGE = 100


def check_against_data(config: TrainConfig, n_images: int) -> None:
    """Refuse sizes the training split cannot fill, stating the largest that makes sense; ``config`` is resolved."""
    if config.objective in IIT_OBJECTIVES and config.iit_samples is not None:
        paper = PAPER_DEFAULTS["iit-das", "lora"]["iit_samples"]
        most = max(MAX_TRIPLETS_PER_IMAGE * n_images, paper)
        if config.iit_samples > most:
            raise ValueError(f"--iit-samples {config.iit_samples} is more than {MAX_TRIPLETS_PER_IMAGE} triplets for each "
                             f"of the {n_images} training images (or the paper's {paper:,}, if more); use at most {most}")
    rows = rows_per_epoch(config, n_images)
    if config.batch_size > rows:
        raise ValueError(f"--batch-size {config.batch_size} is more than the {rows} rows of an epoch (from {n_images} "
                         f"training images); a step cannot take more than an epoch holds, use at most {rows}")
