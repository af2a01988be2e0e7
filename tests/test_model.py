"""The text tower against float64 math written out, and its two shortcuts: cutting padding, and sorted halves."""

import math
from functools import partial

import pytest
import torch

from clip_min.model import CLIP
from clip_min.sorted_parts import in_sorted_parts

from tiny import TINY, TINY_OPENAI, openai_reference, random_tokens, tiny_model


def tricky_tokens(batch: int, seed: int) -> torch.Tensor:
    """random_tokens with the cases that separate argmax(ids) from other end-of-text rules.

    Row 0 holds id 0 inside the text (the real tokenizer gives 0 for the "!" of "Wow!🙂"), so a
    rule that counts non-zero ids, or looks for the first 0, lands before the end token; row 1 fills
    all 77 positions (no padding at all), so a rule that looks for padding finds none.
    """
    tokens = random_tokens(batch, seed=seed)
    end = int(tokens[0].argmax())
    tokens[0, end // 2] = 0
    tokens[1] = torch.randint(1, 998, (TINY.context_length,), generator=torch.Generator().manual_seed(seed))
    tokens[1, 0], tokens[1, -1] = 998, 999
    return tokens


def test_cutting_padding_is_exact_per_text():
    model = tiny_model().eval()
    tokens = random_tokens(5, seed=1)
    with torch.no_grad():
        batch = model.encode_text(tokens)
        alone = torch.cat([model.encode_text(tokens[i : i + 1]) for i in range(5)])
    # Each text alone is cut to its own length; in the batch, to the longest text's. The two runs
    # differ only in summation order: features of size ~3 carry ~1e-6 of float32 rounding.
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


def test_a_given_length_past_the_longest_text_changes_nothing():
    # bench/gpu.py pads batches to a few fixed lengths (buckets) so that compiled graphs are reused.
    model = tiny_model().eval()
    tokens = random_tokens(6, seed=3)
    longest = int(tokens.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        cut = model.encode_text(tokens)
        padded = model.encode_text(tokens, length=longest + 9)
        full = model.encode_text(tokens, length=tokens.shape[1])
        states, _ = model.embed_text(tokens, length=longest + 9)
    assert states.shape[1] == longest + 9  # the padding did run
    # Same math, other matrix sizes: only the summation order differs (~1e-6 on features of size ~3).
    torch.testing.assert_close(padded, cut, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, cut, atol=1e-5, rtol=0)


def test_sorted_halves_equal_one_run_with_gradients():
    """Both paths, values and gradients, each against the same text tower written out in float64."""
    model = tiny_model()
    tokens = tricky_tokens(12, seed=2)
    lengths = tokens.argmax(dim=-1)
    assert lengths.max() - lengths.min() >= 8  # mixed lengths, so the halves are cut differently
    embedding = model.token_embedding.weight.detach().double().requires_grad_(True)
    expected = text_features_float64(model, tokens, embedding)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), embedding)
    for encode in (partial(in_sorted_parts, model.encode_text), model.encode_text):
        got = encode(tokens)
        (grad,) = torch.autograd.grad(got.square().sum(), model.token_embedding.weight)
        # Features of size ~3 through 3 blocks: float32 rounding leaves ~1e-6 (measured 1.2e-6).
        torch.testing.assert_close(got.double(), expected.detach(), atol=1e-5, rtol=0)
        # The gradient's entries reach ~500 and pass through twice as many operations; we measured
        # float32 errors of 9e-7 of the largest entry, so 1e-5 of it leaves a margin of 10.
        torch.testing.assert_close(grad.double(), grad_expected, rtol=0, atol=1e-5 * grad_expected.abs().max().item())


def layer_norm_float64(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    """OpenAI's LayerNorm (torch's, eps 1e-5, typed here rather than read off ``ln``) in float64."""
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * ln.weight.double() + ln.bias.double()


def block_float64(block, x: torch.Tensor, causal: bool, in_proj_update: torch.Tensor | None = None) -> torch.Tensor:
    """One pre-LayerNorm block, (B, L, w) float64, written out: heads, softmax, x * sigmoid(1.702 x).

    ``in_proj_update`` (3w, w), if given, is added to the fused q/k/v weight.
    """
    batch, length, w = x.shape
    heads = block.attn.heads
    attn = block.attn
    in_proj = attn.in_proj_weight.double() + (0 if in_proj_update is None else in_proj_update)
    q, k, v = (layer_norm_float64(x, block.ln_1) @ in_proj.T + attn.in_proj_bias.double()).split(w, dim=-1)  # (B, L, w) each
    q, k, v = (t.view(batch, length, heads, w // heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, w / heads)
    logits = q @ k.transpose(-1, -2) / math.sqrt(w // heads)  # (B, heads, L, L)
    if causal:
        logits = logits.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    mixed = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, w)
    x = x + mixed @ attn.out_proj.weight.double().T + attn.out_proj.bias.double()
    hidden = layer_norm_float64(x, block.ln_2) @ block.mlp.c_fc.weight.double().T + block.mlp.c_fc.bias.double()
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    return x + hidden @ block.mlp.c_proj.weight.double().T + block.mlp.c_proj.bias.double()


@pytest.mark.parametrize("causal, scale", [(False, 1.0), (True, 1.0), (True, 0.003)])
def test_attention_block_matches_float64_math(causal, scale):
    """At scale 0.003 the inputs' variance (~1e-5) is LayerNorm's eps: an eps of 1e-6 or 1e-12 shows."""
    model = tiny_model()
    block = model.transformer.resblocks[1]
    x = scale * torch.randn(3, 9, TINY.text_width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # One block on inputs of size ~3: float32 rounding leaves ~1e-6.
        torch.testing.assert_close(block(x, causal).double(), block_float64(block, x.double(), causal), rtol=0, atol=1e-5)


def test_attention_adds_the_in_proj_adapter():
    """An adapter set as in_proj_lora adds its output to the fused projection's, before the heads split."""
    model = tiny_model()
    block = model.transformer.resblocks[0]
    width = TINY.text_width
    adapter = torch.nn.Linear(width, 3 * width, bias=False)  # any (B, L, w) -> (B, L, 3w) map; LoRA is one
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        adapter.weight.copy_(0.2 * torch.randn(3 * width, width, generator=generator))
    block.attn.in_proj_lora = adapter
    x = torch.randn(2, 7, width, generator=generator)
    with torch.no_grad():
        got = block(x, True).double()
        expected = block_float64(block, x.double(), causal=True, in_proj_update=adapter.weight.double())
        without = block_float64(block, x.double(), causal=True)
    assert (expected - without).abs().max() > 0.1  # the update is large enough to see
    assert (got - without).abs().max() > 1e-3, "the block ignores in_proj_lora: add its output to the fused projection's"
    # Inputs of size ~3 through one block in float32: rounding leaves ~1e-6.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def text_features_float64(model, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Embed with ``embedding`` (vocab, width), every block with the causal mask, ln_final at each text's end token, project."""
    expected = []
    for row in tokens:
        end = int((row == 999).nonzero())  # the end token's position, found by its id
        x = (embedding[row[: end + 1]] + model.positional_embedding[: end + 1].detach().double())[None]
        for block in model.transformer.resblocks:
            x = block_float64(block, x, causal=True)
        expected.append(layer_norm_float64(x[0, end], model.ln_final) @ model.text_projection.double())
    return torch.stack(expected)


def test_text_features_match_float64_math():
    model = tiny_model()
    tokens = tricky_tokens(5, seed=3)
    with torch.no_grad():
        expected = text_features_float64(model, tokens, model.token_embedding.weight.double())
        # Features of size ~3 after 3 blocks in float32: rounding leaves ~1e-6.
        torch.testing.assert_close(model.encode_text(tokens).double(), expected, rtol=0, atol=1e-5)


def test_forward_gives_openai_logits_images_by_texts():
    """CLIP.forward against OpenAI's CLIP.forward on the same weights: 2 images x 3 texts, and its transpose."""
    torch.manual_seed(0)
    ours = CLIP(TINY_OPENAI).eval()
    with torch.no_grad():
        ours.logit_scale.fill_(math.log(1 / 0.05))  # not the initial value, so the scale is seen
    c = TINY_OPENAI
    reference = openai_reference("model").CLIP(c.embed_dim, c.image_resolution, c.vision_layers, c.vision_width,
                                               c.vision_patch_size, c.context_length, c.vocab_size, c.text_width,
                                               c.text_heads, c.text_layers).eval()
    reference.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, c.image_resolution, c.image_resolution, generator=generator)
    tokens = torch.zeros(3, c.context_length, dtype=torch.long)
    for row, length in enumerate((5, 9, 14)):
        tokens[row, 0], tokens[row, length - 1] = 49406, 49407
        tokens[row, 1 : length - 1] = torch.randint(1, 49406, (length - 2,), generator=generator)
    tokens[2, 4] = 0  # an id 0 ("!") inside a text
    with torch.no_grad():
        per_image, per_text = ours(pixels, tokens)
        want_image, want_text = reference(pixels, tokens)
    assert per_image.shape == (2, 3) and per_text.shape == (3, 2)
    # Logits up to 1 / 0.05 = 20 in float32: rounding leaves ~1e-5.
    torch.testing.assert_close(per_image, want_image, rtol=0, atol=1e-4)
    torch.testing.assert_close(per_text, want_text, rtol=0, atol=1e-4)
