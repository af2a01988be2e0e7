"""clip_min.losses.two_text_contrastive_loss, the toy base's pretraining loss, against plain float64 math."""
import math

import pytest
import torch

from clip_min.losses import two_text_contrastive_loss


def reference(image, descriptions, captions, t, w):
    """The loss written out with loops in float64: B images against 2B texts."""
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    ims = [unit(v) for v in image.double().tolist()]
    texts = [unit(v) for v in descriptions.double().tolist() + captions.double().tolist()]
    b = len(ims)
    s = [[math.exp(t) * sum(a * c for a, c in zip(im, text)) for text in texts] for im in ims]
    image_side = 0.0
    for i in range(b):
        log_z = math.log(sum(math.exp(x) for x in s[i]))
        image_side -= ((1 - w) * (s[i][i] - log_z) + w * (s[i][b + i] - log_z)) / b
    text_side = 0.0
    for j in range(2 * b):
        column = [s[i][j] for i in range(b)]
        text_side -= (column[j % b] - math.log(sum(math.exp(x) for x in column))) / (2 * b)
    return (image_side + text_side) / 2


@pytest.mark.parametrize("w", [0.5, 0.8])
def test_two_text_contrastive_loss_matches_float64_math(w):
    g = torch.Generator().manual_seed(0)
    image, descriptions, captions = (torch.randn(5, 8, generator=g) for _ in range(3))
    t = torch.tensor(2.0)
    got = two_text_contrastive_loss(image, descriptions, captions, t, caption_weight=w)
    assert got.item() == pytest.approx(reference(image, descriptions, captions, 2.0, w), rel=1e-5)


def test_at_equal_weights_neither_kind_is_pulled_ahead():
    # With the description and caption of each image equally close to it, the gradient moves
    # neither closer than the other: the loss has no preference to teach.
    g = torch.Generator().manual_seed(1)
    image = torch.randn(4, 8, generator=g)
    shared = torch.randn(4, 8, generator=g)
    descriptions = shared.clone().requires_grad_(True)
    captions = shared.clone().requires_grad_(True)
    two_text_contrastive_loss(image, descriptions, captions, torch.tensor(1.0)).backward()
    torch.testing.assert_close(descriptions.grad, captions.grad)
    tilted_d = shared.clone().requires_grad_(True)
    tilted_c = shared.clone().requires_grad_(True)
    two_text_contrastive_loss(image, tilted_d, tilted_c, torch.tensor(1.0), caption_weight=0.8).backward()
    assert not torch.allclose(tilted_d.grad, tilted_c.grad)
