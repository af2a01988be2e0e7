"""clip_min.rotation: R stays orthogonal (R^T R = I) through training, and gradients reach it."""
import pytest
import torch

from clip_min.rotation import Rotation

MAPS = ["matrix_exp", "cayley"]


def assert_orthogonal(R: torch.Tensor, atol: float) -> None:
    eye = torch.eye(R.shape[0], dtype=torch.float64)
    R = R.detach().double()
    torch.testing.assert_close(R.T @ R, eye, rtol=0, atol=atol)
    torch.testing.assert_close(R @ R.T, eye, rtol=0, atol=atol)


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_orthogonal_at_init(orthogonal_map):
    torch.manual_seed(0)
    rotation = Rotation(64, orthogonal_map)
    assert rotation.R.shape == (64, 64)
    assert_orthogonal(rotation.R, atol=1e-5)
    # random, not the identity
    assert (rotation.R - torch.eye(64)).abs().max() > 0.1


def test_init_is_seeded_by_the_global_rng():
    torch.manual_seed(3)
    first = Rotation(16).R
    torch.manual_seed(3)
    same = Rotation(16).R
    torch.manual_seed(4)
    other = Rotation(16).R
    assert torch.equal(first, same) and not torch.allclose(first, other)


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_orthogonal_after_200_adam_steps(orthogonal_map):
    """A loss that pulls R toward a non-orthogonal target: only the parametrization keeps R^T R = I."""
    torch.manual_seed(0)
    rotation = Rotation(32, orthogonal_map)
    x = torch.randn(64, 32)
    target = x @ torch.randn(32, 32)  # generic matrix, not orthogonal
    optimizer = torch.optim.Adam(rotation.parameters(), lr=0.1)
    start = rotation.R.detach().clone()
    losses = []
    for _ in range(200):
        loss = (rotation.rotate(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert_orthogonal(rotation.R, atol=1e-5)
    assert (rotation.R.detach() - start).abs().max() > 0.1, "R did not move"
    assert min(losses) < losses[0]


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_gradients_reach_the_rotation(orthogonal_map):
    torch.manual_seed(0)
    rotation = Rotation(8, orthogonal_map)
    rotation.rotate(torch.randn(4, 8))[:, :3].sum().backward()
    params = list(rotation.parameters())
    assert len(params) == 1 and params[0].requires_grad
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def cayley_float64(A: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(A.shape[0], dtype=torch.float64)
    return torch.linalg.solve(eye - A / 2, eye + A / 2)  # (I - A/2)^{-1} (I + A/2)


def matrix_exp_float64(A: torch.Tensor) -> torch.Tensor:
    """exp(A) as its Taylor series, summed until the terms vanish (A is small here)."""
    total, term = torch.eye(A.shape[0], dtype=torch.float64), torch.eye(A.shape[0], dtype=torch.float64)
    for n in range(1, 40):
        term = term @ A / n
        total = total + term
    return total


@pytest.mark.parametrize("orthogonal_map, formula", [("matrix_exp", matrix_exp_float64), ("cayley", cayley_float64)])
def test_R_follows_the_orthogonal_map_named(orthogonal_map, formula):
    """R = R_0 f(A), A = tril(X) - tril(X)^T from the free parameter X, with f the map asked for.

    At A = 0 both maps give R_0, so X is set to a random matrix of size ~0.3: there, exp(A) and
    the Cayley map differ by ~1e-2, far above rounding, so a map that is not passed on is seen.
    """
    torch.manual_seed(0)
    rotation = Rotation(8, orthogonal_map)
    X = 0.3 * torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rotation.parametrizations.weight.original.copy_(X)
    R_0 = rotation.parametrizations.weight[0].base.double()  # the orthogonal init, fixed
    A = X.double().tril() - X.double().tril().T
    other = cayley_float64 if formula is matrix_exp_float64 else matrix_exp_float64
    assert (formula(A) - other(A)).abs().max() > 1e-3  # the two maps really differ at this X
    # An 8 x 8 solve or exponential in float32: rounding leaves ~1e-6.
    torch.testing.assert_close(rotation.R.detach().double(), R_0 @ formula(A), rtol=0, atol=1e-5)


def test_unrotate_inverts_rotate():
    torch.manual_seed(0)
    rotation = Rotation(16)
    x = torch.randn(5, 16)
    R = rotation.R.detach().double()
    # A 16-long dot product of values of size ~1 in float32: ~1e-7.
    torch.testing.assert_close(rotation.rotate(x).double(), x.double() @ R, rtol=0, atol=1e-5)
    torch.testing.assert_close(rotation.unrotate(x).double(), x.double() @ R.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(rotation.unrotate(rotation.rotate(x)), x, rtol=0, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        Rotation(0)
    with pytest.raises(ValueError, match="orthogonal_map must be one of 'cayley', 'matrix_exp'"):
        Rotation(4, "householder")
