"""The text tower's two shortcuts: cutting padding, and running a batch as two halves sorted by length."""

import torch

from tiny import random_tokens, tiny_model


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
