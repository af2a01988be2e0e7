"""The text tower against float64 math written out, and its two shortcuts: cutting padding, and sorted halves."""

import math

import pytest
import torch

from tiny import TINY, random_tokens, tiny_model


def test_cutting_padding_is_exact_per_text():
    model = tiny_model().eval()
    tokens = random_tokens(5, seed=1)
    with torch.no_grad():
        batch = model.encode_text_unsorted(tokens)
        alone = torch.cat([model.encode_text_unsorted(tokens[i : i + 1]) for i in range(5)])
    # Each text alone is cut to its own length; in the batch, to the longest text's.
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


def test_a_given_length_past_the_longest_text_changes_nothing():
    # bench/gpu.py pads batches to a few fixed lengths (buckets) so that compiled graphs are reused.
    model = tiny_model().eval()
    tokens = random_tokens(6, seed=3)
    longest = int(tokens.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        cut = model.encode_text_unsorted(tokens)
        padded = model.encode_text_unsorted(tokens, length=longest + 9)
        full = model.encode_text_unsorted(tokens, length=tokens.shape[1])
        states, _ = model.embed_text(tokens, length=longest + 9)
    assert states.shape[1] == longest + 9  # the padding did run
    torch.testing.assert_close(padded, cut, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, cut, atol=1e-5, rtol=0)


def test_sorted_halves_equal_one_run_with_gradients():
    model = tiny_model()
    tokens = random_tokens(12, seed=2)
    lengths = tokens.argmax(dim=-1)
    assert lengths.max() - lengths.min() >= 8  # mixed lengths, so the halves are cut differently
    halves = model.encode_text(tokens)
    grad_halves = torch.autograd.grad(halves.square().sum(), model.token_embedding.weight)[0]
    one_run = model.encode_text_unsorted(tokens)
    grad_one = torch.autograd.grad(one_run.square().sum(), model.token_embedding.weight)[0]
    torch.testing.assert_close(halves, one_run, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_halves, grad_one, atol=1e-5, rtol=1e-4)


def layer_norm_float64(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


def block_float64(block, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """One pre-LayerNorm block, (B, L, w) float64, written out: heads, softmax, x * sigmoid(1.702 x)."""
    batch, length, w = x.shape
    heads = block.attn.heads
    attn = block.attn
    q, k, v = (layer_norm_float64(x, block.ln_1) @ attn.in_proj_weight.double().T
               + attn.in_proj_bias.double()).split(w, dim=-1)  # (B, L, w) each
    q, k, v = (t.view(batch, length, heads, w // heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, L, w / heads)
    logits = q @ k.transpose(-1, -2) / math.sqrt(w // heads)  # (B, heads, L, L)
    if causal:
        logits = logits.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    mixed = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, w)
    x = x + mixed @ attn.out_proj.weight.double().T + attn.out_proj.bias.double()
    hidden = layer_norm_float64(x, block.ln_2) @ block.mlp.c_fc.weight.double().T + block.mlp.c_fc.bias.double()
    hidden = hidden * torch.sigmoid(1.702 * hidden)
    return x + hidden @ block.mlp.c_proj.weight.double().T + block.mlp.c_proj.bias.double()


@pytest.mark.parametrize("causal", [False, True])
def test_attention_block_matches_float64_math(causal):
    model = tiny_model()
    block = model.transformer.resblocks[1]
    x = torch.randn(3, 9, TINY.text_width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(block(x, causal).double(), block_float64(block, x.double(), causal), rtol=0, atol=1e-5)


def test_text_features_match_float64_math():
    """Embed, every block with the causal mask, ln_final at each text's end token, project."""
    model = tiny_model()
    tokens = random_tokens(5, seed=3)
    expected = []
    for row in tokens:
        end = int((row == 999).nonzero())  # the end token's position
        x = (model.token_embedding.weight[row[: end + 1]] + model.positional_embedding[: end + 1]).double()[None]
        for block in model.transformer.resblocks:
            x = block_float64(block, x, causal=True)
        expected.append(layer_norm_float64(x[0, end], model.ln_final) @ model.text_projection.double())
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens).double(), torch.stack(expected), rtol=0, atol=1e-5)
