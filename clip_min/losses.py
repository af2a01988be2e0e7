r"""The paper's objectives (Eqs. 1, 2, 3, 5), the score C they compare, and CLIP's own loss.

Every objective is a two-way cross-entropy over scores of one image with two texts:

    CE([s_0, s_1], j) = -\log \frac{e^{s_j}}{e^{s_0} + e^{s_1}},  averaged over the batch,

where the one-hot target [0, 1] is index j = 1 and [1, 0] is j = 0. The score is CLIP's logit
C(im, text) = e^t \cos(im, text), with t = ``logit_scale`` (the authors' code uses the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def score(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """C(im, text) = e^t cos(im, text) for aligned rows: (B, D), (B, D) -> (B,)."""
    return logit_scale.exp() * F.cosine_similarity(image_features, text_features, dim=-1)


def clipscore(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """CLIPScore (Hessel et al. 2021): 2.5 max(cos(im, text), 0) for aligned rows, (B,).

    Hessel et al. encode the text with the prefix "A photo depicts "; adding it before
    tokenizing is the caller's job, since this function only sees features.
    """
    return 2.5 * F.cosine_similarity(image_features, text_features, dim=-1).clamp(min=0)


def _two_way_ce(first: torch.Tensor, second: torch.Tensor, target: int) -> torch.Tensor:
    """Mean over the batch of CE([first, second], target): (B,), (B,) -> scalar."""
    logits = torch.stack([first, second], dim=1)  # (B, 2)
    labels = torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def behavioral_loss(*, c_cap: torch.Tensor, c_des: torch.Tensor) -> torch.Tensor:
    r"""Eq. 1: \mathcal{L} = CE([C(im, cap), C(im, des)], [0, 1]), the description should win."""
    return _two_way_ce(c_cap, c_des, target=1)


def iit_loss_caption_base(*, c_cap: torch.Tensor, c_cap_with_des: torch.Tensor) -> torch.Tensor:
    r"""Eq. 2: \mathcal{L}_{IIT} = CE([C(im, cap), DII(C, \rho, (im, cap), (im, des), Z)], [0, 1]).

    The caption run given the description's value of Z should score higher than the plain caption.
    """
    return _two_way_ce(c_cap, c_cap_with_des, target=1)


def iit_loss_description_base(*, c_des: torch.Tensor, c_des_with_cap: torch.Tensor) -> torch.Tensor:
    r"""Eq. 3: \mathcal{L}_{IIT} = CE([C(im, des), DII(C, \rho, (im, des), (im, cap), Z)], [1, 0]).

    The description run given the caption's value of Z should score lower than the plain description.
    """
    return _two_way_ce(c_des, c_des_with_cap, target=0)


def iit_loss(
    *, c_cap: torch.Tensor, c_cap_with_des: torch.Tensor, c_des: torch.Tensor, c_des_with_cap: torch.Tensor
) -> torch.Tensor:
    """Eqs. 2 and 3 together: the mean of the caption-base and description-base losses."""
    return (iit_loss_caption_base(c_cap=c_cap, c_cap_with_des=c_cap_with_des)
            + iit_loss_description_base(c_des=c_des, c_des_with_cap=c_des_with_cap)) / 2


def iit_loss_rows(*, c_base: torch.Tensor, c_base_with_source: torch.Tensor, caption_base: torch.Tensor) -> torch.Tensor:
    """Eqs. 2 and 3 row by row (the authors' one-way rows): CE over [C(base), DII], mean over the rows.

    A row whose base is the caption (``caption_base`` True) is Eq. 2, target the intervened score;
    one whose base is the description is Eq. 3, target the base's own score.
    """
    logits = torch.stack([c_base, c_base_with_source], dim=-1)  # (B, 2)
    return F.cross_entropy(logits, caption_base.long())


def joint_loss(*, l_iit: torch.Tensor, l_behavioral: torch.Tensor, a: float) -> torch.Tensor:
    r"""Eq. 5: \mathcal{L}_{joint} = a \mathcal{L}_{IIT} + (1 - a) \mathcal{L}_{behavioral}."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a must be in [0, 1] (the paper tries 0.2, 0.3, 0.5, 0.7, 0.8), got {a}")
    return a * l_iit + (1 - a) * l_behavioral


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: the mean of image->text and text->image CE over B x B logits.

    logits_{ij} = e^t cos(im_i, text_j); row i's target is column i (its own pair).
    """
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image @ text.T  # (B_image, B_text)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def two_text_contrastive_loss(image_features: torch.Tensor, description_features: torch.Tensor,
                              caption_features: torch.Tensor, logit_scale: torch.Tensor,
                              caption_weight: float = 0.5) -> torch.Tensor:
    """CLIP's InfoNCE with two right texts per image: its description and its caption.

    logits_{ij} = e^t cos(im_i, text_j) over the B images and 2B texts (descriptions, then
    captions). Image i's target puts 1 - w of its mass on text i and w = ``caption_weight`` on
    text B + i (at w = 0.5 the loss is lowest when both kinds score the same); each text's target
    is its own image.
    """
    image = F.normalize(image_features, dim=-1)
    texts = F.normalize(torch.cat([description_features, caption_features]), dim=-1)
    logits = logit_scale.exp() * image @ texts.T  # (B, 2B)
    own = torch.arange(logits.shape[0], device=logits.device)
    log_p = F.log_softmax(logits, dim=1)
    image_to_text = -((1 - caption_weight) * log_p[own, own] + caption_weight * log_p[own, own + len(own)]).mean()
    text_to_image = F.cross_entropy(logits.T, torch.cat([own, own]))
    return (image_to_text + text_to_image) / 2
