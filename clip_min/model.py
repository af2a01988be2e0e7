"""CLIP (Radford et al. 2021): a vision transformer and a text transformer meeting in one space.

Modules are named after the keys of OpenAI's checkpoints (``visual.conv1.weight``,
``transformer.resblocks.3.attn.in_proj_weight``, ...) so their state dicts load with
``strict=True``. Tensors are batch-first throughout. The text tower is exposed in three
stages (:meth:`CLIP.embed_text`, :meth:`Transformer.forward` over a range of blocks,
:meth:`CLIP.project_text`) because the distributed interchange intervention
(``clip_min.intervention``) stops the run after one block, edits it, and continues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class CLIPConfig:
    """Shape of a CLIP model. The defaults are OpenAI's ViT-B/32."""

    embed_dim: int = 512  # size of the joint image-text space
    image_resolution: int = 224  # input images are image_resolution x image_resolution
    vision_patch_size: int = 32  # each patch_size x patch_size patch becomes one token
    vision_width: int = 768  # width of the vision transformer's residual stream
    vision_layers: int = 12  # number of vision transformer blocks
    vision_heads: int = 12  # attention heads per vision block (OpenAI: width // 64)
    context_length: int = 77  # maximum number of text tokens, start and end included
    vocab_size: int = 49408  # byte-pair vocabulary of the tokenizer
    text_width: int = 512  # width of the text transformer's residual stream
    text_layers: int = 12  # number of text transformer blocks
    text_heads: int = 8  # attention heads per text block (OpenAI: width // 64)

    @property
    def grid(self) -> int:
        """Patches per side of the image."""
        return self.image_resolution // self.vision_patch_size


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always normalises in float32.

    CUDA autocast already runs layer_norm in float32, but CPU autocast runs it in bfloat16,
    which would make the CPU exercise of the mixed-precision path differ from the GPU one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """The GELU approximation CLIP was trained with: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """Self-attention with OpenAI's parameter layout: one fused q/k/v projection.

    ``in_proj_lora`` is an optional adapter on the fused projection (see ``clip_min.lora``);
    its output, shaped like the fused q/k/v, is added to the frozen projection's.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.in_proj_lora: nn.Module | None = None

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3 * width)
        if self.in_proj_lora is not None:
            qkv = qkv + self.in_proj_lora(x)
        # (B, L, 3 * width) -> 3 x (B, heads, L, width // heads)
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(batch, length, width)  # (B, L, width)
        return self.out_proj(out)


class MLP(nn.Module):
    """The block's feed-forward part: width -> 4 width -> width with QuickGELU."""

    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of blocks; ``forward`` can run any contiguous range of them."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start .. stop - 1`` (all of them by default) on x of shape (B, L, width)."""
        for block in self.resblocks[start:stop]:
            x = block(x, causal)
        return x


class VisionTransformer(nn.Module):
    """ViT image encoder: patches -> tokens, a class token, a transformer, a projection."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        width = config.vision_width
        self.conv1 = nn.Conv2d(3, width, config.vision_patch_size, stride=config.vision_patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(config.grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, config.vision_layers, config.vision_heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, config.embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid**2, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # (B, 1 + grid**2, width)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # (B, embed_dim)


class CLIP(nn.Module):
    """The two towers and the learned temperature of the contrastive logits."""

    def __init__(self, config: CLIPConfig = CLIPConfig()):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.text_width))
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads)
        self.ln_final = LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """Random initialisation for training from scratch (OpenAI's scales)."""
        for tower, width in ((self.visual.transformer, self.config.vision_width), (self.transformer, self.config.text_width)):
            attn_std = width**-0.5
            proj_std = width**-0.5 * (2 * tower.layers) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.zeros_(block.attn.in_proj_bias)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(block.attn.out_proj.bias)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
                nn.init.zeros_(block.mlp.c_fc.bias)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
                nn.init.zeros_(block.mlp.c_proj.bias)
        scale = self.config.vision_width**-0.5
        nn.init.normal_(self.visual.class_embedding, std=scale)
        nn.init.normal_(self.visual.positional_embedding, std=scale)
        nn.init.normal_(self.visual.proj, std=scale)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.config.text_width**-0.5)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) normalised pixels -> (B, embed_dim) image features, not normalised."""
        return self.visual(pixels)

    def embed_text(self, tokens: torch.Tensor, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, context) -> input states (B, L, text_width) and end-of-text positions (B,).

        The batch is cut to its longest sequence L: every position after a text's end token is
        padding, and the causal mask keeps padding from reaching the end token, so the cut is exact.
        A given ``length`` (at least the longest text's) is used instead: a few fixed lengths let
        torch.compile and CUDA graphs reuse their work, and the GPU need not report L to the host.
        """
        eot = tokens.argmax(dim=-1)  # the end-of-text id (49407) is the largest in the vocabulary
        if length is None:
            length = int(eot.max()) + 1
        x = self.token_embedding(tokens[:, :length]) + self.positional_embedding[:length]
        return x, eot

    def project_text(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Final states (B, L, text_width) -> (B, embed_dim): ln_final at the end token, then project."""
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # (B, text_width)
        return self.ln_final(x) @ self.text_projection

    def encode_text(self, tokens: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, context) token ids -> (B, embed_dim) text features, not normalised (cut as in :meth:`embed_text`)."""
        x, eot = self.embed_text(tokens, length)
        return self.project_text(self.transformer(x, causal=True), eot)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's logits: (B_image, B_text) and their transpose, scaled cosines."""
        image = F.normalize(self.encode_image(pixels), dim=-1)
        text = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * image @ text.T
        return logits, logits.T
