"""A speed trick for text batches on the CPU: run them in parts sorted by length.

``CLIP.embed_text`` cuts a batch to its longest text (exact: the causal mask keeps the padding
from the end token), so in a batch of short and long texts every text pays for the longest.
Sorted by length and cut into parts, each part runs at its own longest length. Every text's
features are its own, and so is every row's loss, so the parts give the numbers of one pass up
to rounding. The model, the intervention and the losses compute their equations on the batch
they are given; this trick is applied where batches are made (the training step, evaluation,
the feature code), always through :func:`in_sorted_parts`.

Only on the CPU. A CPU step costs what it computes, and the parts save padding. A GPU step at the
paper's batch of 12 is bound by kernel launches, which every part repeats: on an H200, one pass
padded to a length bucket took 35 ms a step against 73 ms for two sorted halves
(bench/results/h200-2026-12-04.txt, "+ one pass, length buckets"), so on any other device a
batch runs in one pass.
"""

from __future__ import annotations

from typing import Callable

import torch

# Two parts for each text in a row: a batch of single texts runs in halves, and rows of a caption
# and a description in quarters. The two texts of a row run side by side (clip_min.intervention),
# so a part pays for the longer of each pair. On bench/train_step.py's batch (one thread, CPU time)
# halves left the IIT-DAS step at 1.33 to 1.45 behavioral steps, quarters at 1.20 to 1.24, and six
# parts gained nothing more; single texts gain 1% from more than two parts, and in halves they
# keep, bit for bit, the numbers they had when CLIP.encode_text sorted them itself.
PARTS_PER_TEXT = 2
SORTED_PARTS_FROM = 8  # rows; a smaller batch runs in one pass


def in_sorted_parts(run: Callable, *tokens: torch.Tensor):
    """``run(*tokens)``, on the CPU computed in parts of rows sorted by length (PARTS_PER_TEXT).

    ``tokens`` are token ids (N, context) whose rows go together (row i of each: one image's
    caption and description, say); a row is as long as its longest text. ``run`` maps them to a
    tensor, or a tuple of tensors, with N rows; so does this, in the input's order of rows.
    """
    if tokens[0].device.type != "cpu" or tokens[0].shape[0] < SORTED_PARTS_FROM:
        return run(*tokens)
    ends = torch.stack([t.argmax(dim=-1) for t in tokens]).amax(dim=0)  # (N,) the end-of-text id is the largest
    order = ends.argsort()  # shortest first
    parts = [run(*(t[rows] for t in tokens)) for rows in order.tensor_split(PARTS_PER_TEXT * len(tokens))]
    inverse = order.argsort()  # puts the sorted rows back in the input's order
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)[inverse]
    return tuple(torch.cat(outputs)[inverse] for outputs in zip(*parts))
