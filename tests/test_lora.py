"""clip_min.lora against the LoRA equation h = x (W + (alpha / r) B A)^T + b computed in float64."""
import math

import pytest
import torch
import torch.nn as nn

from clip_min.lora import (
    InProjLoRA,
    LoRABranch,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)

from tiny import TINY, random_tokens, tiny_model


def randomize_lora(model: nn.Module, seed: int = 1) -> None:
    """B starts at zero, which would make every check below trivially pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRABranch):
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=generator) * 0.1)


def lora_linear_float64(x, weight, bias, branch: LoRABranch, scaling: float) -> torch.Tensor:
    """x (W + scaling B A)^T + b in float64; ``scaling`` is alpha / r worked out by the caller, not read off the branch."""
    A, B = branch.lora_A.double(), branch.lora_B.double()
    return x.double() @ (weight.double() + scaling * B @ A).T + bias.double()


# --- the layer equation ---------------------------------------------------------------------


def test_zero_B_is_the_frozen_layer_exactly():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    x = torch.randn(5, 16)
    expected = base(x)
    layer = LoRALinear(base, LoRAConfig(rank=4))
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("rank, alpha", [(1, None), (4, None), (4, 8.0), (8, 2.0)])
def test_lora_linear_matches_float64_equation(rank, alpha):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), LoRAConfig(rank=rank, alpha=alpha))
    randomize_lora(layer)
    x = torch.randn(3, 5, 16)
    expected = lora_linear_float64(x, layer.weight, layer.bias, layer.lora, (rank if alpha is None else alpha) / rank)
    # One 16-long dot product and a rank-r one on values of size ~1: float32 leaves ~1e-7.
    torch.testing.assert_close(layer(x).double(), expected, rtol=0, atol=1e-5)


def test_init_follows_microsoft_lora():
    torch.manual_seed(0)
    branch = LoRALinear(nn.Linear(256, 8), LoRAConfig(rank=64)).lora
    assert torch.equal(branch.lora_B, torch.zeros(8, 64))
    # kaiming_uniform_(a=sqrt(5)) draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 256.
    bound = 1 / math.sqrt(256)
    assert branch.lora_A.abs().max() <= bound and branch.lora_A.abs().max() > 0.9 * bound
    assert isinstance(branch.lora_dropout, nn.Identity)


def test_dropout_acts_on_the_branch_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), LoRAConfig(rank=4, dropout=0.5))
    randomize_lora(layer)
    x = torch.randn(200, 16)
    layer.eval()
    torch.testing.assert_close(layer(x).double(), lora_linear_float64(x, layer.weight, layer.bias, layer.lora, 1.0),
                               rtol=0, atol=1e-5)  # alpha = r: scaling 1; float32 leaves ~1e-7 here
    layer.train()
    with torch.no_grad():
        layer.lora.lora_B.zero_()  # no branch: the frozen path alone must be deterministic
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_dropout_acts_on_the_branch_input():
    """h = W x + b + (alpha / r) B A dropout(x), as loralib and peft drop x before A, not A x or B A x.

    With A square and invertible (r = in) and B tall (out > r), the branch's output gives back
    the dropped input u = dropout(x) exactly: u = A^{-1} B^+ (h - W x - b) / scaling. Each entry
    of u must be 0 or x / (1 - p). Dropping A x, or B A x, gives other values.
    """
    p, rank, alpha = 0.5, 6, 12.0
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(rank, 16), LoRAConfig(rank=rank, alpha=alpha, dropout=p))
    randomize_lora(layer)
    layer.train()
    x = torch.randn(50, rank) + 2.0  # away from 0, so a kept entry is never mistaken for a dropped one
    with torch.no_grad():
        branch = (layer(x).double() - (x.double() @ layer.weight.double().T + layer.bias.double()))  # (50, 16)
    A, B = layer.lora.lora_A.double(), layer.lora.lora_B.double()
    u = torch.linalg.lstsq(B, branch.T / (alpha / rank)).solution  # (rank, 50): A dropout(x)
    u = torch.linalg.solve(A, u).T  # (50, rank): dropout(x)
    kept = (u - x.double() / (1 - p)).abs() < 1e-3
    dropped = u.abs() < 1e-3
    assert (kept | dropped).all(), "the branch's input is not dropout(x): dropout sits elsewhere on the branch"
    assert 0.3 < dropped.double().mean() < 0.7  # p = 0.5 of the entries dropped, so dropout did act


@pytest.mark.parametrize("targets, slices", [("qv", "qv"), ("attn", "qkv")])
def test_fused_in_proj_matches_float64_attention(targets, slices):
    """The whole attention module (fused q/k/v LoRA, out_proj LoRA, causal softmax) in float64."""
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8.0, targets=targets)
    randomize_lora(model)
    attn = model.transformer.resblocks[1].attn
    assert attn.in_proj_lora.slices == tuple(slices)
    x = torch.randn(2, 7, TINY.text_width)

    w, h = TINY.text_width, TINY.text_heads
    weight = attn.in_proj_weight.double().clone()
    for i, s in enumerate("qkv"):  # [W_q; W_k; W_v], each slice plus (alpha / r) B A = (8 / 4) B A
        if s in slices:
            branch = getattr(attn.in_proj_lora, s)
            weight[i * w : (i + 1) * w] += 2.0 * branch.lora_B.double() @ branch.lora_A.double()
    q, k, v = (x.double() @ weight.T + attn.in_proj_bias.double()).split(w, dim=-1)  # (B, L, w) each
    q, k, v = (t.view(2, 7, h, w // h).transpose(1, 2) for t in (q, k, v))  # (B, h, L, w / h)
    logits = q @ k.transpose(-1, -2) / math.sqrt(w // h)
    logits = logits.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    heads = logits.softmax(-1) @ v  # (B, h, L, w / h)
    mixed = heads.transpose(1, 2).reshape(2, 7, w)
    out = attn.out_proj
    if targets == "attn":
        expected = lora_linear_float64(mixed, out.weight, out.bias, out.lora, 2.0)
    else:
        expected = mixed @ out.weight.double().T + out.bias.double()
    # One attention on inputs of size ~1: float32 rounding leaves ~1e-6.
    torch.testing.assert_close(attn(x, causal=True).double(), expected, rtol=0, atol=1e-5)


# --- which modules are adapted ----------------------------------------------------------------


def expected_names(targets: str, towers: str) -> set[str]:
    names = set()
    tower_list = [("transformer", TINY.text_layers)]
    if towers == "both":
        tower_list.append(("visual.transformer", TINY.vision_layers))
    for prefix, layers in tower_list:
        for i in range(layers):
            block = f"{prefix}.resblocks.{i}"
            names |= {f"{block}.attn.in_proj_lora.{s}" for s in ("qv" if targets == "qv" else "qkv")}
            if targets != "qv":
                names.add(f"{block}.attn.out_proj")
            if targets == "all-linear":
                names |= {f"{block}.mlp.c_fc", f"{block}.mlp.c_proj"}
    return names


@pytest.mark.parametrize("towers", ["text", "both"])
@pytest.mark.parametrize("targets, per_block", [("qv", 2), ("attn", 4), ("all-linear", 6)])
def test_exactly_the_requested_modules_are_adapted(targets, per_block, towers):
    model = tiny_model()
    names = apply_lora(model, rank=2, targets=targets, towers=towers)
    blocks = TINY.text_layers + (TINY.vision_layers if towers == "both" else 0)
    assert len(names) == len(set(names)) == per_block * blocks
    assert set(names) == expected_names(targets, towers)
    modules = dict(model.named_modules())
    # A q/k/v slice is named after its branch inside InProjLoRA, a linear layer after itself.
    slices = {f"{n}.{s}" for n, m in modules.items() if isinstance(m, InProjLoRA) for s in m.slices}
    holders = slices | {n for n, m in modules.items() if isinstance(m, LoRALinear)}
    assert holders == set(names)
    if towers == "text":
        assert not any(isinstance(m, (LoRABranch, InProjLoRA)) for m in model.visual.modules())


@pytest.mark.parametrize("targets", ["qv", "attn", "all-linear"])
def test_only_lora_parameters_require_grad_and_frozen_keys_keep_their_names(targets):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, rank=2, targets=targets, towers="both")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = set(lora_state_dict(model))
    assert trainable == adapters and all(n.rsplit(".", 1)[1] in ("lora_A", "lora_B") for n in trainable)
    after = model.state_dict()
    assert set(after) - adapters == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_zero_B_leaves_the_model_unchanged():
    model = tiny_model()
    tokens = random_tokens(4)
    pixels = torch.randn(2, 3, 32, 32)
    text, image = model.encode_text(tokens), model.encode_image(pixels)
    apply_lora(model, rank=4, targets="all-linear", towers="both")
    assert torch.equal(model.encode_text(tokens), text)
    assert torch.equal(model.encode_image(pixels), image)


def test_gradients_reach_every_adapter():
    model = tiny_model()
    apply_lora(model, rank=2, targets="all-linear")
    randomize_lora(model)
    model.encode_text(random_tokens(3)).square().sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name


# --- merging ---------------------------------------------------------------------------------------


# q and v alone (only two of the fused thirds adapted), with and without the vision tower, and attention only.
@pytest.mark.parametrize("targets, towers", [("all-linear", "both"), ("qv", "text"), ("qv", "both"), ("attn", "both")])
def test_merged_forward_equals_unmerged_forward(targets, towers):
    model = tiny_model()
    apply_lora(model, rank=4, alpha=16.0, targets=targets, towers=towers)
    randomize_lora(model)
    tokens, pixels = random_tokens(4), torch.randn(2, 3, 32, 32)
    text, image = model.encode_text(tokens), model.encode_image(pixels)
    merge_lora(model)
    # The merged W + B A differs from W x + B A x only by rounding: ~1e-6 on features of size ~3.
    torch.testing.assert_close(model.encode_text(tokens), text, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.encode_image(pixels), image, rtol=0, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model.encode_text(tokens), text, rtol=0, atol=1e-5)


def test_merge_is_idempotent_and_unmerge_restores_W():
    model = tiny_model()
    apply_lora(model, rank=4, targets="all-linear")
    randomize_lora(model)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    merge_lora(model)
    once = {k: v.clone() for k, v in model.state_dict().items()}
    merge_lora(model)  # a second merge must not add B A again
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in once.items())
    attn = model.transformer.resblocks[0].attn
    w = TINY.text_width
    for i, s in enumerate("qkv"):  # alpha = r: each slice of [W_q; W_k; W_v] gains B A
        branch = getattr(attn.in_proj_lora, s)
        expected = (frozen["transformer.resblocks.0.attn.in_proj_weight"][i * w : (i + 1) * w].double()
                    + branch.lora_B.double() @ branch.lora_A.double())
        # Weights of size ~0.1 plus a rank-4 product, rounded once to float32: ~1e-8.
        torch.testing.assert_close(attn.in_proj_weight[i * w : (i + 1) * w].double(), expected, rtol=0, atol=1e-6)
    out = model.transformer.resblocks[0].attn.out_proj
    expected = frozen["transformer.resblocks.0.attn.out_proj.weight"].double() + out.lora.lora_B.double() @ out.lora.lora_A.double()
    torch.testing.assert_close(out.weight.double(), expected, rtol=0, atol=1e-6)
    unmerge_lora(model)
    unmerge_lora(model)
    for k, v in frozen.items():  # W + B A - B A: two float32 roundings of values of size ~0.1
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_merging_q_and_v_adds_to_their_thirds_of_the_fused_weight_and_leaves_k_alone():
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8.0, targets="qv")
    randomize_lora(model)
    attn = model.transformer.resblocks[1].attn
    frozen, out_proj = attn.in_proj_weight.detach().double().clone(), attn.out_proj.weight.detach().clone()
    merge_lora(model)
    w = TINY.text_width
    for i, s in enumerate("qkv"):  # [W_q; W_k; W_v]: q and v gain (alpha / r) B A = (8 / 4) B A, k nothing
        expected = frozen[i * w : (i + 1) * w].clone()
        if s != "k":
            branch = getattr(attn.in_proj_lora, s)
            expected += 2.0 * branch.lora_B.double() @ branch.lora_A.double()
        # Weights of size ~0.1 plus a rank-4 product, rounded once to float32: ~1e-8.
        torch.testing.assert_close(attn.in_proj_weight[i * w : (i + 1) * w].double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(attn.out_proj.weight, out_proj)  # not a target
    unmerge_lora(model)
    torch.testing.assert_close(attn.in_proj_weight.double(), frozen, rtol=0, atol=1e-6)


# --- adapter state dicts ------------------------------------------------------------------------


def test_adapter_state_dict_round_trip():
    model = tiny_model()
    apply_lora(model, rank=4, targets="attn")
    randomize_lora(model)
    tokens = random_tokens(3)
    expected = model.encode_text(tokens)
    saved = lora_state_dict(model)
    assert all(k.rsplit(".", 1)[1] in ("lora_A", "lora_B") for k in saved)
    assert len(saved) == 2 * 4 * TINY.text_layers

    fresh = tiny_model()  # same frozen weights (same seed), fresh adapters
    apply_lora(fresh, rank=4, targets="attn")
    assert not torch.allclose(fresh.encode_text(tokens), expected)
    load_lora_state_dict(fresh, saved)
    assert torch.equal(fresh.encode_text(tokens), expected)


def test_load_into_a_merged_model_replaces_the_merged_update():
    model = tiny_model()
    apply_lora(model, rank=4, targets="attn")
    randomize_lora(model, seed=1)
    tokens = random_tokens(3)
    expected = model.encode_text(tokens)
    saved = lora_state_dict(model)
    randomize_lora(model, seed=2)
    merge_lora(model)
    load_lora_state_dict(model, saved)
    torch.testing.assert_close(model.encode_text(tokens), expected, rtol=0, atol=1e-5)


def test_snapshot_does_not_follow_training():
    model = tiny_model()
    apply_lora(model, rank=2)
    saved = lora_state_dict(model)
    randomize_lora(model)
    assert all(torch.equal(v, torch.zeros_like(v)) for k, v in saved.items() if k.endswith("lora_B"))


def test_load_errors_name_the_mismatch():
    model = tiny_model()
    apply_lora(model, rank=4, targets="attn")
    saved = lora_state_dict(model)

    other_rank = tiny_model()
    apply_lora(other_rank, rank=8, targets="attn")
    with pytest.raises(ValueError, match="rank"):
        load_lora_state_dict(other_rank, saved)

    other_targets = tiny_model()
    apply_lora(other_targets, rank=4, targets="qv")
    with pytest.raises(ValueError, match="unexpected"):
        load_lora_state_dict(other_targets, saved)

    with pytest.raises(ValueError, match="missing"):
        load_lora_state_dict(model, {k: v for k, v in saved.items() if ".0." not in k})

    with pytest.raises(ValueError, match="apply_lora"):
        load_lora_state_dict(tiny_model(), saved)


# --- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"rank": 2.5}, "rank"),
        ({"rank": 4, "targets": "mlp"}, "targets must be one of 'qv', 'attn', 'all-linear'"),
        ({"rank": 4, "towers": "vision"}, "towers must be one of 'text', 'both'"),
        ({"rank": 4, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"rank": 4, "dropout": -0.1}, "dropout"),
        ({"rank": 4, "alpha": 0.0}, "alpha"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        apply_lora(tiny_model(), **kwargs)


def test_apply_twice_is_an_error():
    model = tiny_model()
    apply_lora(model, rank=2)
    with pytest.raises(ValueError, match="already"):
        apply_lora(model, rank=2)
