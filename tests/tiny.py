"""A tiny CLIP and random token ids shared by the tests of LoRA and the intervention."""

import torch

from clip_min.model import CLIP, CLIPConfig

# A vocabulary of 1,000 ids: 998 stands for the start token and 999, the largest id, for the end
# token, as 49406 and 49407 do in CLIP's vocabulary.
TINY = CLIPConfig(
    embed_dim=32, image_resolution=32, vision_patch_size=8, vision_width=64, vision_layers=2, vision_heads=2,
    context_length=77, vocab_size=1000, text_width=64, text_layers=3, text_heads=2,
)


def tiny_model(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(TINY)


def random_tokens(batch: int, seed: int = 0) -> torch.Tensor:
    """Zero-padded ids of random texts 3 to 19 tokens long, start 998, end 999."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(batch, TINY.context_length, dtype=torch.long)
    for i in range(batch):
        length = int(torch.randint(3, 20, (1,), generator=generator))
        tokens[i, 0], tokens[i, length - 1] = 998, 999
        tokens[i, 1 : length - 1] = torch.randint(1, 998, (length - 2,), generator=generator)
    return tokens
