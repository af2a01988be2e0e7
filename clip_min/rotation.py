"""The learned rotation rho of distributed alignment search (Geiger et al. 2023).

DAS looks for a concept not along the model's own coordinates but along the first k
coordinates of a rotated basis: rho(h) = h R with R orthogonal, rho^{-1}(y) = y R^T. R is learned
by gradient descent, so it has to stay orthogonal after every optimizer step; as in the
authors' code, torch's ``parametrizations.orthogonal`` guarantees that: the optimizer moves an
unconstrained parameter X, R is computed from it (see ORTHOGONAL_MAPS), and so no step can
leave the orthogonal group.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

# How R is computed from the free parameter X (A is the skew-symmetric part built from X):
# "matrix_exp", R = R_0 exp(A), is torch's default and the authors' choice; "cayley",
# R = R_0 (I - A/2)^{-1} (I + A/2), reaches every rotation R_0 Q where Q has no eigenvalue -1, and at
# dim 512 on a CPU its step is about 6x cheaper (matrix_exp's backward exponentiates a 2 dim x 2 dim
# matrix), which is most of what IIT-DAS adds to a behavioral step.
ORTHOGONAL_MAPS = ("cayley", "matrix_exp")


class Rotation(nn.Module):
    """An orthogonal dim x dim matrix R, random at init (from the global torch RNG)."""

    def __init__(self, dim: int, orthogonal_map: str = "cayley"):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if orthogonal_map not in ORTHOGONAL_MAPS:
            raise ValueError(f"orthogonal_map must be one of {', '.join(map(repr, ORTHOGONAL_MAPS))}, got {orthogonal_map!r}")
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.orthogonal_(self.weight)
        # From here on ``self.weight`` is computed from the trainable
        # ``parametrizations.weight.original``; the init above becomes the fixed base R_0.
        parametrizations.orthogonal(self, "weight", orthogonal_map=orthogonal_map)

    @property
    def R(self) -> torch.Tensor:
        """The rotation matrix (dim x dim); recomputed on each access, so read it once per step."""
        return self.weight

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """rho(x) = x R on row vectors (..., dim)."""
        return x @ self.R

    def unrotate(self, y: torch.Tensor) -> torch.Tensor:
        """rho^{-1}(y) = y R^T, since R^{-1} = R^T for an orthogonal R."""
        return y @ self.R.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rotate(x)
