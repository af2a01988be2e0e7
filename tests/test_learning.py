"""LoRA (page 02) and Eq. 1 (page 03) together teach a tiny CLIP to prefer descriptions, in a few seconds.

The equation tests check each piece against float64 math; this one checks that the pieces train:
the gradient of Eq. 1 reaches the adapters through the text tower and moves the score the right way.
It is the grader's training check for the LoRA and Eq. 1 exercises (``python -m clip_min.exercises``).

A small world of token ids stands in for Concadia: every text has four words from a shared pool,
and a description adds two words from a pool of its own, a caption two from another. Images are
random pixels through the frozen vision tower. Accuracy is measured on pairs held out from training.
"""

import pytest
import torch

from clip_min.lora import apply_lora
from clip_min.losses import behavioral_loss, score
from clip_min.metrics import preference_accuracy

from tiny import TINY, tiny_model

SHARED, DESCRIPTION_WORDS, CAPTION_WORDS = (1, 400), (400, 410), (410, 420)  # id ranges [low, high)
START, END = 998, 999


def texts(kind: tuple[int, int], n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, context) ids: start, four shared words and two of ``kind`` in random order, end, padding."""
    words = torch.cat([torch.randint(*SHARED, (n, 4), generator=generator),
                       torch.randint(*kind, (n, 2), generator=generator)], dim=1)  # (n, 6)
    words = words.gather(1, torch.rand(n, 6, generator=generator).argsort(dim=1))
    tokens = torch.zeros(n, TINY.context_length, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:7], tokens[:, 7] = START, words, END
    return tokens


def pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images (n, 3, R, R) with a description and a caption each."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, TINY.image_resolution, TINY.image_resolution, generator=generator)
    return pixels, texts(DESCRIPTION_WORDS, n, generator), texts(CAPTION_WORDS, n, generator)


def accuracy(model, image_features, descriptions, captions) -> float:
    with torch.no_grad():
        c_des = score(image_features, model.encode_text(descriptions), model.logit_scale)
        c_cap = score(image_features, model.encode_text(captions), model.logit_scale)
    return preference_accuracy(c_des=c_des, c_cap=c_cap)


@pytest.fixture
def one_thread():
    """Matrices this small gain nothing from a second thread, which on a busy machine mostly waits (10 s against 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lora_with_eq1_teaches_a_tiny_clip_to_prefer_descriptions(one_thread):
    model = tiny_model(seed=0).eval()
    train_pixels, train_des, train_cap = pairs(128, seed=1)
    test_pixels, test_des, test_cap = pairs(128, seed=2)
    with torch.no_grad():  # the vision tower stays frozen, so its features are computed once
        train_images, test_images = model.encode_image(train_pixels), model.encode_image(test_pixels)
    before = accuracy(model, test_images, test_des, test_cap)

    apply_lora(model, rank=4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    for _ in range(2):  # two epochs of batch 16
        for rows in torch.randperm(128).split(16):
            c_cap = score(train_images[rows], model.encode_text(train_cap[rows]), model.logit_scale)
            c_des = score(train_images[rows], model.encode_text(train_des[rows]), model.logit_scale)
            loss = behavioral_loss(c_cap=c_cap, c_des=c_des)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = accuracy(model, test_images, test_des, test_cap)

    assert before < 0.75, f"the untrained tiny CLIP already prefers descriptions ({before:.0%}); the check needs a task to learn"
    assert after > 0.9, f"LoRA with Eq. 1 moved held-out preference from {before:.0%} to {after:.0%}, not over 90%"
