"""Eqs. 1, 2, 3 and 5 and the score C, each against its cross-entropy written out in float64."""
import math

import pytest
import torch

from clip_min.losses import (
    behavioral_loss,
    clipscore,
    contrastive_loss,
    iit_loss,
    iit_loss_caption_base,
    iit_loss_description_base,
    joint_loss,
    score,
)


def scores(seed: int, batch: int = 6) -> torch.Tensor:
    """Scores on CLIP's logit scale (cosines times up to 100)."""
    return torch.randn(batch, generator=torch.Generator().manual_seed(seed)) * 10


def two_way_ce_float64(first: torch.Tensor, second: torch.Tensor, target: int) -> float:
    """mean_i -log(e^{s_target} / (e^{first} + e^{second})), log-sum-exp by hand."""
    first, second = first.double(), second.double()
    top = torch.maximum(first, second)
    log_z = top + torch.log(torch.exp(first - top) + torch.exp(second - top))
    chosen = second if target == 1 else first
    return float((log_z - chosen).mean())


def test_score_is_exp_logit_scale_times_cosine():
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 32, generator=generator), torch.randn(5, 32, generator=generator)
    t = torch.tensor(math.log(1 / 0.07))
    i, x = image.double(), text.double()
    cosine = (i * x).sum(-1) / (i.norm(dim=-1) * x.norm(dim=-1))
    torch.testing.assert_close(score(image, text, t).double(), math.exp(float(t)) * cosine, rtol=1e-6, atol=0)


def test_clipscore_is_2_5_times_clipped_cosine():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    text = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [3.0, 4.0]])
    torch.testing.assert_close(clipscore(image, text), torch.tensor([2.5 / math.sqrt(2), 0.0, 2.5]))


def test_eq1_behavioral_loss_prefers_the_description():
    c_cap, c_des = scores(1), scores(2)
    assert behavioral_loss(c_cap=c_cap, c_des=c_des).item() == pytest.approx(two_way_ce_float64(c_cap, c_des, target=1), abs=1e-5)
    # Direction: the loss falls as the description's score rises above the caption's.
    assert behavioral_loss(c_cap=c_cap, c_des=c_cap + 5) < behavioral_loss(c_cap=c_cap, c_des=c_cap) < behavioral_loss(c_cap=c_cap, c_des=c_cap - 5)
    assert behavioral_loss(c_cap=c_cap, c_des=c_cap).item() == pytest.approx(math.log(2))


def test_eq2_caption_base_prefers_the_intervened_run():
    c_cap, c_cap_with_des = scores(3), scores(4)
    got = iit_loss_caption_base(c_cap=c_cap, c_cap_with_des=c_cap_with_des).item()
    assert got == pytest.approx(two_way_ce_float64(c_cap, c_cap_with_des, target=1), abs=1e-5)
    assert iit_loss_caption_base(c_cap=c_cap, c_cap_with_des=c_cap + 5) < iit_loss_caption_base(c_cap=c_cap, c_cap_with_des=c_cap - 5)


def test_eq3_description_base_prefers_the_plain_description():
    c_des, c_des_with_cap = scores(5), scores(6)
    got = iit_loss_description_base(c_des=c_des, c_des_with_cap=c_des_with_cap).item()
    assert got == pytest.approx(two_way_ce_float64(c_des, c_des_with_cap, target=0), abs=1e-5)
    assert iit_loss_description_base(c_des=c_des, c_des_with_cap=c_des - 5) < iit_loss_description_base(c_des=c_des, c_des_with_cap=c_des + 5)


def test_eq2_eq3_iit_loss_is_their_mean():
    c_cap, c_cap_with_des, c_des, c_des_with_cap = (scores(s) for s in (7, 8, 9, 10))
    expected = (two_way_ce_float64(c_cap, c_cap_with_des, 1) + two_way_ce_float64(c_des, c_des_with_cap, 0)) / 2
    assert iit_loss(c_cap=c_cap, c_cap_with_des=c_cap_with_des, c_des=c_des, c_des_with_cap=c_des_with_cap).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("a", [0.0, 0.2, 0.3, 0.5, 0.7, 0.8, 1.0])
def test_eq5_joint_loss(a):
    l_iit, l_behavioral = torch.tensor(1.25), torch.tensor(0.5)
    assert joint_loss(l_iit=l_iit, l_behavioral=l_behavioral, a=a).item() == pytest.approx(a * 1.25 + (1 - a) * 0.5)


@pytest.mark.parametrize("a", [-0.1, 1.5])
def test_eq5_joint_loss_rejects_a_outside_0_1(a):
    with pytest.raises(ValueError, match=r"a must be in \[0, 1\]"):
        joint_loss(l_iit=torch.tensor(1.0), l_behavioral=torch.tensor(1.0), a=a)


def test_contrastive_loss_matches_float64_infonce():
    generator = torch.Generator().manual_seed(11)
    image, text = torch.randn(5, 16, generator=generator), torch.randn(5, 16, generator=generator)
    t = torch.tensor(math.log(1 / 0.07))
    i = image.double() / image.double().norm(dim=-1, keepdim=True)
    x = text.double() / text.double().norm(dim=-1, keepdim=True)
    logits = math.exp(float(t)) * i @ x.T  # (images, texts)

    def ce_rows(m):  # each row's target is its own column
        top = m.max(dim=1, keepdim=True).values
        log_z = top.squeeze(1) + torch.log(torch.exp(m - top).sum(dim=1))
        return (log_z - m.diagonal()).mean()

    expected = float((ce_rows(logits) + ce_rows(logits.T)) / 2)
    assert contrastive_loss(image, text, t).item() == pytest.approx(expected, abs=1e-5)
    # The two directions are different numbers here, so the check above sees both of them.
    assert float(ce_rows(logits)) != pytest.approx(float(ce_rows(logits.T)))
