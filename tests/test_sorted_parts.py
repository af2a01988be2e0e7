"""The training step in length-sorted parts (clip_min.sorted_parts) against the same step in one pass."""

import pytest
import torch

from clip_min.lora import LoRABranch, apply_lora
from clip_min.rotation import Rotation
from clip_min.sorted_parts import in_sorted_parts
from clip_min.train import loop
from clip_min.train.config import TrainConfig

from tiny import TINY, random_tokens, tiny_model

B = 12  # rows: enough for the parts (SORTED_PARTS_FROM)


def step(objective: str, one_way: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """loop.step_loss on one batch of mixed lengths: the loss, every gradient, and the batch sizes block 0 saw."""
    model = tiny_model()
    apply_lora(model, rank=4)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B away from zero, so that the adapters shape the features the loss sees
        for module in model.modules():
            if isinstance(module, LoRABranch):
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=generator) * 0.1)
    torch.manual_seed(2)
    rotation = None if objective == "behavioral" else Rotation(TINY.text_width)
    config = TrainConfig(objective=objective, layer=1, intervention_size=24, joint_alpha=0.3)
    image = torch.randn(B, TINY.embed_dim, generator=generator)
    descriptions, captions = random_tokens(B, seed=3), random_tokens(B, seed=4)
    caption_base = torch.arange(B) % 3 == 0 if one_way else None  # both directions, unevenly
    sizes = []
    model.transformer.resblocks[0].register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    loss = loop.step_loss(model, rotation, config, image, descriptions, captions, caption_base)
    loss.backward()
    named = list(model.named_parameters()) + ([] if rotation is None else list(rotation.named_parameters()))
    return loss.detach(), {name: p.grad for name, p in named if p.requires_grad}, sizes


@pytest.mark.parametrize("objective, one_way", [("behavioral", False), ("iit-das", False), ("joint", False),
                                                ("iit-das", True), ("joint", True)])
def test_the_step_in_sorted_parts_has_the_loss_and_gradients_of_one_pass(objective, one_way, monkeypatch):
    loss, grads, sizes = step(objective, one_way)
    monkeypatch.setattr(loop, "in_sorted_parts", lambda run, *tokens: run(*tokens))
    one_loss, one_grads, one_sizes = step(objective, one_way)
    texts = 2 * B  # every row has two texts, run side by side, in both settings
    assert one_sizes == [texts] and sum(sizes) == texts and len(sizes) == (2 if objective == "behavioral" else 4)
    # Same math on other matrix shapes, so float32 sums run in another order: through three blocks we
    # measured 2.2e-7 of the loss and 2.8e-6 of a tensor's largest gradient entry; 10x that is allowed.
    torch.testing.assert_close(loss, one_loss, rtol=2e-6, atol=0)
    assert grads.keys() == one_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        scale = one_grads[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(grad, one_grads[name], rtol=0, atol=3e-5 * scale, msg=name)


def test_parts_come_back_in_the_input_order():
    tokens = random_tokens(10, seed=5)
    ends = tokens.argmax(dim=-1)
    assert not torch.equal(ends.argsort(), torch.arange(10))  # the sort moves rows
    seen = []

    def run(a, b):
        seen.append(len(a))
        return a.argmax(dim=-1), (a + b).sum(dim=-1)

    got = in_sorted_parts(run, tokens, tokens.flip(0))
    assert seen == [3, 3, 2, 2]  # four parts of a row of two texts (10 rows: 3, 3, 2, 2)
    assert torch.equal(got[0], ends) and torch.equal(got[1], (tokens + tokens.flip(0)).sum(dim=-1))
    assert torch.equal(in_sorted_parts(lambda a: a.argmax(dim=-1), tokens), ends)
