"""Eq. 4, the distributed interchange intervention, against a naive rerun patched with a forward hook."""
import pytest
import torch

from clip_min.intervention import dii, interchange, interchange_features, one_way_features
from clip_min.lora import LoRABranch, apply_lora
from clip_min.losses import iit_loss, score
from clip_min.model import CLIP
from clip_min.rotation import Rotation

from tiny import TINY, random_tokens, tiny_model

WIDTH = TINY.text_width


def rotation(seed: int = 0) -> Rotation:
    torch.manual_seed(seed)
    return Rotation(WIDTH)


def identity_rotation() -> Rotation:
    rot = rotation()
    with torch.no_grad():
        rot.weight = torch.eye(WIDTH)  # the parametrization accepts any orthogonal matrix
    assert torch.allclose(rot.R, torch.eye(WIDTH), atol=1e-6)
    return rot


def block_outputs(model: CLIP, tokens: torch.Tensor, layer: int, run) -> torch.Tensor:
    """The output of block ``layer`` (N, L, width) seen while ``run()`` executes."""
    seen = []
    handle = model.transformer.resblocks[layer].register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def naive_dii(model: CLIP, R: torch.Tensor, base: torch.Tensor, source: torch.Tensor, layer: int, k: int) -> torch.Tensor:
    """Two full runs: read the source at the site, then rerun the base with the site overwritten.

    The overwrite is Eq. 4 in its first form, in float64: rotate, take the first k rotated
    coordinates from the source, rotate back.
    """
    rows = torch.arange(base.shape[0])
    h_source = block_outputs(model, source, layer, lambda: model.encode_text(source))[rows, source.argmax(-1)]
    R = R.detach().double()

    def patch(module, args, out):
        out = out.clone()
        eot = base.argmax(-1)
        y_base, y_source = out[rows, eot].double() @ R, h_source.double() @ R  # rho(h)
        y_base[:, :k] = y_source[:, :k]  # Y <- GET(rho(M), s, Y)
        out[rows, eot] = (y_base @ R.T).float()  # rho^{-1}
        return out

    handle = model.transformer.resblocks[layer].register_forward_hook(patch)
    try:
        return model.encode_text(base)
    finally:
        handle.remove()


# --- Eq. 4 on vectors -----------------------------------------------------------------------------


def test_eq4_interchange_k0_is_the_base_exactly():
    h_base, h_source = torch.randn(5, WIDTH), torch.randn(5, WIDTH)
    assert torch.equal(interchange(h_base, h_source, rotation().R, 0), h_base)


@pytest.mark.parametrize("k", [1, 7, 32, WIDTH])
def test_eq4_interchange_equals_rotate_swap_unrotate(k):
    R = rotation().R.detach()
    h_base, h_source = torch.randn(5, WIDTH), torch.randn(5, WIDTH)
    y = h_base.double() @ R.double()
    y[:, :k] = (h_source.double() @ R.double())[:, :k]
    expected = y @ R.double().T
    # Two 64-long products of values of size ~1 in float32: ~1e-6 (measured: 16% of this tolerance).
    torch.testing.assert_close(interchange(h_base, h_source, R, k).double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [0, 5, WIDTH])
def test_eq4_identity_rotation_swaps_only_the_first_k_coordinates(k):
    h_base, h_source = torch.randn(3, WIDTH), torch.randn(3, WIDTH)
    out = interchange(h_base, h_source, identity_rotation().R, k)
    # The parametrized "identity" is I up to ~1e-7, and the swap is two 64-long sums of values of size ~1.
    torch.testing.assert_close(out[:, :k], h_source[:, :k], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, k:], h_base[:, k:], rtol=0, atol=1e-5)


# --- Eq. 4 in the model -------------------------------------------------------------------------------


def test_eq4_dii_k0_is_the_base_run():
    model = tiny_model()
    base, source = random_tokens(4, seed=1), random_tokens(4, seed=2)
    torch.testing.assert_close(dii(model, rotation(), base, source, layer=1, k=0), model.encode_text(base), rtol=0, atol=1e-6)


def edited_site(model: CLIP, layer: int, eot: torch.Tensor, run) -> torch.Tensor:
    """The end-token states (B, width) right after the edit at ``layer``, seen while ``run()`` executes.

    They are read where they are next used: the input of block layer + 1, or for the last block
    the input of ln_final, which project_text gives only the end-token rows.
    """
    last = layer + 1 == TINY.text_layers
    module = model.ln_final if last else model.transformer.resblocks[layer + 1]
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        run()
    finally:
        handle.remove()
    return seen[0] if last else seen[0][torch.arange(eot.shape[0]), eot]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_eq4_dii_k_width_puts_the_source_state_at_the_site(layer):
    model = tiny_model()
    base, source = random_tokens(4, seed=1), random_tokens(4, seed=2)
    h_source = block_outputs(model, source, layer, lambda: model.encode_text(source))[torch.arange(4), source.argmax(-1)]
    rot = rotation()
    patched = edited_site(model, layer, base.argmax(-1), lambda: dii(model, rot, base, source, layer, k=WIDTH))
    torch.testing.assert_close(patched, h_source, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [0, 5, WIDTH])
def test_eq4_identity_rotation_changes_only_the_first_k_coordinates_in_the_model(k):
    model = tiny_model()
    base, source = random_tokens(4, seed=1), random_tokens(4, seed=2)
    rows, layer = torch.arange(4), 1
    h_base = block_outputs(model, base, layer, lambda: model.encode_text(base))
    h_source = block_outputs(model, source, layer, lambda: model.encode_text(source))[rows, source.argmax(-1)]
    seen = []
    handle = model.transformer.resblocks[layer + 1].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    dii(model, identity_rotation(), base, source, layer, k)
    handle.remove()
    patched, eot = seen[0], base.argmax(-1)
    torch.testing.assert_close(patched[rows, eot, :k], h_source[:, :k], rtol=0, atol=1e-5)
    torch.testing.assert_close(patched[rows, eot, k:], h_base[rows, eot, k:], rtol=0, atol=1e-5)
    # every other position keeps the base's state
    others = torch.ones(patched.shape[:2], dtype=torch.bool)
    others[rows, eot] = False
    length = patched.shape[1]
    torch.testing.assert_close(patched[others], h_base[:, :length][others], rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer, k", [(0, 1), (1, 16), (1, 40), (2, 64), (2, 3)])
def test_eq4_dii_matches_a_naive_hooked_rerun(layer, k):
    model = tiny_model()
    apply_lora(model, rank=4)
    randomize_lora(model)
    base, source = random_tokens(5, seed=3), random_tokens(5, seed=4)
    rot = rotation(seed=layer)
    expected = naive_dii(model, rot.R, base, source, layer, k)
    # Features of size ~3 after 3 blocks, the site patched in float64 on one side: ~1e-6 of rounding.
    torch.testing.assert_close(dii(model, rot, base, source, layer, k), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer, k", [(0, 8), (1, 32), (2, 64)])
def test_eq4_interchange_features_are_the_four_runs(layer, k):
    model = tiny_model()
    base, source = random_tokens(4, seed=5), random_tokens(4, seed=6)
    rot = rotation()
    got = interchange_features(model, rot, base, source, layer, k)
    expected = (
        model.encode_text(base),
        model.encode_text(source),
        naive_dii(model, rot.R, base, source, layer, k),
        naive_dii(model, rot.R, source, base, layer, k),
    )
    assert all(g.shape == (4, TINY.embed_dim) for g in got)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[2], dii(model, rot, base, source, layer, k), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer, k", [(0, 8), (2, 40)])
def test_eq4_one_way_features_are_base_source_and_the_patched_base(layer, k):
    model = tiny_model()
    base, source = random_tokens(4, seed=7), random_tokens(4, seed=8)
    rot = rotation(seed=1)
    got = one_way_features(model, rot, base, source, layer, k)
    expected = (model.encode_text(base), model.encode_text(source), naive_dii(model, rot.R, base, source, layer, k))
    for g, e in zip(got, expected, strict=True):
        # Features of size ~3 after 3 blocks, the site patched in float64 on one side: ~1e-6 of rounding.
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_eq4_prefix_blocks_run_once(layer):
    model = tiny_model()
    batches = {i: [] for i in range(TINY.text_layers)}
    for i, block in enumerate(model.transformer.resblocks):
        block.register_forward_pre_hook(lambda m, args, i=i: batches[i].append(args[0].shape[0]))
    interchange_features(model, rotation(), random_tokens(3, seed=1), random_tokens(3, seed=2), layer, k=8)
    for i, sizes in batches.items():
        assert sizes == ([6] if i <= layer else [12]), (i, sizes)


def randomize_lora(model: CLIP) -> None:
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRABranch):
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=generator) * 0.1)


def test_eq4_gradients_reach_lora_and_the_rotation():
    model = tiny_model()
    apply_lora(model, rank=4)
    randomize_lora(model)
    rot = rotation()
    base, source = random_tokens(4, seed=1), random_tokens(4, seed=2)
    image = torch.randn(4, TINY.embed_dim)
    features = interchange_features(model, rot, base, source, layer=1, k=16)
    c_cap, c_des, c_cap_with_des, c_des_with_cap = (score(image, f, model.logit_scale) for f in features)
    iit_loss(c_cap=c_cap, c_cap_with_des=c_cap_with_des, c_des=c_des, c_des_with_cap=c_des_with_cap).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    (rotation_param,) = rot.parameters()
    assert rotation_param.grad is not None and rotation_param.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "layer, k, match",
    [(-1, 8, r"layer must be in 0\.\.2"), (3, 8, r"layer must be in 0\.\.2"), (1, -1, r"k must be in 0\.\.64"), (1, 65, r"k must be in 0\.\.64")],
)
def test_eq4_bad_layer_or_k(layer, k, match):
    model = tiny_model()
    base, source = random_tokens(2, seed=1), random_tokens(2, seed=2)
    for fn in (dii, interchange_features):
        with pytest.raises(ValueError, match=match):
            fn(model, rotation(), base, source, layer, k)


def test_eq4_bad_rotation_or_pairs():
    model = tiny_model()
    base = random_tokens(2, seed=1)
    with pytest.raises(ValueError, match="Rotation\\(64\\)"):
        dii(model, Rotation(32), base, base, 1, 8)
    with pytest.raises(ValueError, match="same shape"):
        dii(model, rotation(), base, random_tokens(3, seed=2), 1, 8)
    with pytest.raises(ValueError, match="k must be in"):
        interchange(torch.randn(WIDTH), torch.randn(WIDTH), torch.eye(WIDTH), WIDTH + 1)



# --- the one-way rows of the authors in the training step ---------------------------------------------


def one_way_loss_by_hand(model: CLIP, rot: Rotation, image, descriptions, captions, caption_base, layer: int, k: int,
                         a: float | None) -> torch.Tensor:
    """The authors' one-way rows written out: hooks on encode_text, the patch and the losses in float64.

    Row i's base is its caption where caption_base[i] (Eq. 2, the intervened run should win), else
    its description (Eq. 3, the plain run should win); its source is the other text. The source's
    site state keeps its graph, so the gradient flows back through the source's run too, as in
    run_iit_clip.py. ``a`` given: Eq. 5 with the behavioral loss on the same rows.
    """
    rows = torch.arange(len(caption_base))
    pick = caption_base[:, None]
    base = torch.where(pick, captions, descriptions)
    source = torch.where(pick, descriptions, captions)
    seen = []
    handle = model.transformer.resblocks[layer].register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        source_features = model.encode_text(source)
    finally:
        handle.remove()
    h_source = seen[0][rows, source.argmax(-1)].double()  # (B, width), not detached
    R = rot.R.double()

    def patch(module, args, out):
        eot = base.argmax(-1)
        y = out[rows, eot].double() @ R  # rho(h_base)
        y = torch.cat([(h_source @ R)[:, :k], y[:, k:]], dim=1)  # Y from the source
        out = out.clone()
        out[rows, eot] = (y @ R.T).to(out.dtype)
        return out

    handle = model.transformer.resblocks[layer].register_forward_hook(patch)
    try:
        patched_features = model.encode_text(base)
    finally:
        handle.remove()
    base_features = model.encode_text(base)

    def c(features):  # e^t cos(im, text)
        f, i = features.double(), image.double()
        return model.logit_scale.double().exp() * (f * i).sum(-1) / (f.norm(dim=-1) * i.norm(dim=-1))

    def ce(first, second, target):  # -log softmax([first, second])[target], per row
        chosen = torch.where(target, second, first)
        return -(chosen - torch.logsumexp(torch.stack([first, second]), dim=0))

    c_base, c_patched = c(base_features), c(patched_features)
    l_iit = ce(c_base, c_patched, caption_base).mean()
    if a is None:
        return l_iit
    c_source = c(source_features)
    c_cap, c_des = torch.where(caption_base, c_base, c_source), torch.where(caption_base, c_source, c_base)
    l_behavioral = ce(c_cap, c_des, torch.ones_like(caption_base)).mean()
    return l_behavioral + a * (l_iit - l_behavioral)  # Eq. 5, a L_IIT + (1 - a) L_behavioral


@pytest.mark.parametrize("objective", ["iit-das", "joint"])
def test_one_way_rows_in_the_training_step_match_hooks_and_float64_with_gradients_through_the_source(objective):
    from clip_min.train import loop
    from clip_min.train.config import TrainConfig

    layer, k, a, B = 1, 24, 0.3, 6
    config = TrainConfig(objective=objective, layer=layer, intervention_size=k, joint_alpha=a)
    caption_base = torch.tensor([True, False, False, True, True, False])  # both directions, mixed
    image = torch.randn(B, TINY.embed_dim, generator=torch.Generator().manual_seed(9))
    descriptions, captions = random_tokens(B, seed=10), random_tokens(B, seed=11)

    def loss_and_gradients(compute):
        model = tiny_model()
        apply_lora(model, rank=4)
        randomize_lora(model)
        rot = rotation(seed=3)
        loss = compute(model, rot)
        loss.backward()
        named = list(model.named_parameters()) + [(f"rotation.{n}", p) for n, p in rot.named_parameters()]
        return loss.detach().double(), {name: p.grad for name, p in named if p.requires_grad}

    got, got_grads = loss_and_gradients(
        lambda model, rot: loop.step_loss(model, rot, config, image, descriptions, captions, caption_base))
    want, want_grads = loss_and_gradients(
        lambda model, rot: one_way_loss_by_hand(model, rot, image, descriptions, captions, caption_base, layer, k,
                                                None if objective == "iit-das" else a))
    # float32 features of size ~3 against a float64 patch and loss: ~1e-7 of the loss, ~1e-6 of a gradient.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        scale = grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-4 * scale, msg=name)
