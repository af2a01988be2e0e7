r"""Which words make CLIP score a text high? Integrated gradients (Eq. 6) and their mediated form (Eq. 7).

Integrated gradients (Sundararajan et al. 2017) credit each input dimension i with its share of
the change in the score C(im, text) = e^t cos(im, text) between a baseline x' and the input x:

    IG_i(x) = (x_i - x'_i) \int_0^1 \frac{\partial C(x' + t (x - x'))}{\partial x_i} dt        (Eq. 6)

and the shares add up to the whole change (completeness): \sum_i IG_i(x) = C(x) - C(x').

Choices made here (ours; each is one line of code below if you prefer another):

- x is the text's token embeddings, token_embedding(ids), one width-sized vector per BPE piece.
  The positional embeddings are added afterwards and held fixed: a word's place is not the word.
- x' keeps the start and end tokens' embeddings and sets every other token's to zero, so the
  baseline is "a text of the same length with nothing in it". The start and end tokens then get
  no attribution (x_i - x'_i = 0), and the words share C(x) - C(x') among themselves.
- The integral is the trapezoid rule on ``steps`` evenly spaced t in [0, 1], run as batches
  of up to ``batch_size`` points. 256 points keep completeness within 1% on the models we tried; the attribute command
  prints the gap so you can raise --steps when it is not.

The authors' choices (ig.py, captum's LayerIntegratedGradients) are options beside ours:
``rule="gauss-legendre"`` integrates at ``steps`` Gauss-Legendre points (they use 50), and
``baseline="eos"`` gives every token between the start and the end the end token's embedding
(their baseline [BOS, EOS, ..., EOS] of the text's length; their padding id is the end token).
Their baseline is the embedding layer's output, token plus position, but the positions are the
same in x and x', so the difference x - x' and every attribution are the same as here.
- A token's attribution is the sum of IG_i over its embedding dimensions; a word's is the sum
  over its BPE pieces.

The mediated gradient (Eq. 7) is the part of the gradient that flows through one site H:

    \frac{\partial C}{\partial x_i} \Big|_{\text{via } H} = \frac{\partial C}{\partial H} \frac{\partial H}{\partial x_i}

H is the DAS subspace the intervention (``clip_min.intervention``) swaps: the first k coordinates
of \rho(h) = h R, with h the output of text block ``layer`` at the end-of-text token. Every
path from the input to C crosses the output of that block, at some position, so the gradient
there splits in two without remainder. With P = R_{:, :k} R_{:, :k}^T, the projection onto H:

- mediated: only the end-of-text state's P-component passes gradient (every other position
  and the complement are detached);
- around, complement "all-paths" (ours): everything else passes (the other positions, and the
  end-of-text state's (I - P)-component), so mediated + around = total at every t, and the same
  holds for the integrated attributions;
- around, complement "end-state" (the authors' integrated_gradients_patch.py, gradient_func):
  only the end-of-text state's (I - P)-component passes; the other positions of the block are
  detached, as for "mediated", and so counted in neither. Mediated + around is then the part of
  the total that flows through the end-of-text state at the site.

The forward values are untouched in every case. Mediated IG is Eq. 6 with the mediated gradient.
k = 0 cuts the site: mediated IG is then exactly zero.

Word attributions (:func:`word_attributions`) are what Figure 2 colours and Table 3 correlates
with human norms; clip_min/report/attribute.py and clip_min/report/table3.py do both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import score
from .model import CLIP
from .tokenizer import EOT, SOT, get_tokenizer

# Points of the IG integral. On the trained toy IIT-DAS run the worst of 80 texts missed
# completeness by 13.3% at 64 points of the path, 3.0% at 128 and 0.74% at 256.
DEFAULT_STEPS = 256
# The miss falls fourfold with each doubling, so 4,096 points bring it near 0.003%: more buys only
# time, and Gauss-Legendre's nodes come from a (steps x steps) eigenproblem.
MAX_STEPS = 4096


def check_steps(steps: int) -> None:
    """Refuse a number of points the integral cannot use: fewer than its two ends, or more than MAX_STEPS."""
    if not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"--steps must be 2 (both ends of the path) to {MAX_STEPS} (past it the completeness "
                         f"miss is below a thousandth of a percent), got {steps}")


@dataclass
class IGResult:
    """Per-token attributions of a batch of texts, and the two scores they explain."""

    attributions: torch.Tensor  # (B, context): sum over the embedding of IG_i; 0 for start, end and padding
    score: torch.Tensor  # (B,) C(im, x)
    baseline_score: torch.Tensor  # (B,) C(im, x')


# What "around the site" lets through: every path that avoids H (ours), or only the end-of-text
# state's coordinates outside H at the site (the authors' integrated_gradients_patch.py).
COMPLEMENTS = ("all-paths", "end-state")


@dataclass(frozen=True)
class Site:
    """Where Eq. 7 routes the gradient: H = the first k coordinates of h R at block ``layer``'s end token."""

    R: torch.Tensor  # (width, width) the DAS rotation
    layer: int  # 0-based text block whose output holds H
    k: int  # size of H
    carry: str  # "mediated": gradient through H only; "around": through the complement of H
    start: int = 0  # H is rotated coordinates [start, start + k): ours 0, the authors' ig.py 128 (of k = 256)
    complement: str = "all-paths"  # "around" means every other path (ours) or the end state's rest only (ig.py), COMPLEMENTS


def route_gradient(h: torch.Tensor, eot: torch.Tensor, site: Site) -> torch.Tensor:
    """Eq. 7's split: h (N, L, width) with the same values, its gradient let through H only or around H only.

    With P = R_{:, :k} R_{:, :k}^T, the gradient reaching the end-of-text state is multiplied by P
    ("mediated", every other position detached) or by I - P ("around"; the other positions are
    left untouched for the complement "all-paths", detached for "end-state").
    """
    rows = torch.arange(h.shape[0], device=h.device)
    h_eot = h[rows, eot]  # (N, width)
    R_k = site.R[:, site.start : site.start + site.k].to(h.dtype)  # (width, k)
    moving = h_eot - h_eot.detach()  # zero-valued, but carries h_eot's gradient
    through_H = (moving @ R_k) @ R_k.T  # (N, width), zero-valued; passes back P times its gradient
    if site.carry == "mediated":
        return h.detach().index_put((rows, eot), h_eot.detach() + through_H)
    if site.complement == "end-state":
        return h.detach().index_put((rows, eot), h_eot - through_H)
    return h.index_put((rows, eot), h_eot - through_H)


def text_features_from_embeddings(
    model: CLIP, embeddings: torch.Tensor, eot: torch.Tensor, site: Site | None = None
) -> torch.Tensor:
    """CLIP's text tower from token embeddings (N, L, width) instead of ids: (N, embed_dim).

    The same computation as ``model.encode_text`` after its embedding lookup; with a ``site``,
    the gradient is routed there (see :func:`route_gradient`).
    """
    x = embeddings + model.positional_embedding[: embeddings.shape[1]]  # (N, L, width)
    if site is None:
        return model.project_text(model.transformer(x, causal=True), eot)
    h = model.transformer(x, causal=True, stop=site.layer + 1)
    h = route_gradient(h, eot, site)
    return model.project_text(model.transformer(h, causal=True, start=site.layer + 1), eot)


def trapezoid(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points t (steps,) evenly spaced in [0, 1] and trapezoid weights (steps,) summing to 1."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (both ends of the path), got {steps}")
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
    weights[[0, -1]] /= 2
    return t, weights


def gauss_legendre(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Gauss-Legendre nodes t (points,) in (0, 1) and weights (points,) summing to 1, in float64.

    The nodes are the roots of the Legendre polynomial P_n: the eigenvalues of its Jacobi matrix,
    tridiagonal with off-diagonal j / \sqrt{4 j^2 - 1} (Golub and Welsch 1969); each weight on
    [-1, 1] is 2 v_0^2 for the first entry v_0 of the node's unit eigenvector. [-1, 1] maps to
    [0, 1] by t = (x + 1) / 2, which halves the weights.
    """
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    j = torch.arange(1, points, dtype=torch.float64)
    off = j / torch.sqrt(4 * j**2 - 1)
    jacobi = torch.diag(off, 1) + torch.diag(off, -1)  # (points, points)
    x, vectors = torch.linalg.eigh(jacobi)
    return (x + 1) / 2, vectors[0] ** 2  # (2 v_0^2) / 2


RULES = ("trapezoid", "gauss-legendre")
BASELINES = ("zero", "eos")


def path_points(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integral's points t and weights, each (steps,) float64, by ``rule``."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: use one of {', '.join(RULES)}")
    return trapezoid(steps) if rule == "trapezoid" else gauss_legendre(steps)


def _integrate(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor, steps: int,
               site: Site | None, batch_size: int, rule: str = "trapezoid", baseline: str = "zero") -> IGResult:
    """Eq. 6 (or Eq. 6 with Eq. 7's gradient when ``site`` is given) for each text of the batch.

    ``rule`` picks the integral's points and weights (:func:`path_points`); ``baseline`` picks x'
    ("zero": inner tokens zero; "eos": inner tokens the end token's embedding). C(x') and C(x) are
    computed apart, at the two ends, since a Gauss-Legendre path has neither.
    The model should be in eval mode: dropout would make the path's points disagree.
    """
    if image_features.shape[0] == 1:
        image_features = image_features.expand(tokens.shape[0], -1)
    if image_features.shape[0] != tokens.shape[0]:
        raise ValueError(f"one image per text, or one image for all: got {image_features.shape[0]} "
                         f"images and {tokens.shape[0]} texts")
    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: use one of {', '.join(BASELINES)}")
    t, weights = path_points(rule, steps)
    image_features = image_features.detach()
    attributions = torch.zeros(tokens.shape, dtype=torch.float32)
    scores, baseline_scores = [], []
    for row in range(tokens.shape[0]):
        eot = int(tokens[row].argmax())
        x = model.token_embedding(tokens[row, : eot + 1]).detach()  # (L, width)
        keep = torch.zeros(eot + 1, 1, dtype=x.dtype, device=x.device)
        keep[[0, eot]] = 1  # the start and end tokens stay as they are in x'
        filler = x[eot] if baseline == "eos" else torch.zeros_like(x[0])  # x[eot]: the end token's embedding
        x_prime = x * keep + filler * (1 - keep)  # (L, width)
        gradient_sum = torch.zeros_like(x, dtype=torch.float64)
        for chunk in torch.arange(steps).split(batch_size):
            alpha = t[chunk].to(x.device, x.dtype)[:, None, None]  # (n, 1, 1)
            path = (x_prime + alpha * (x - x_prime)).requires_grad_(True)  # (n, L, width)
            ends_at = torch.full((len(chunk),), eot, device=x.device)
            features = text_features_from_embeddings(model, path, ends_at, site)
            c = score(image_features[row].expand(len(chunk), -1), features.float(), model.logit_scale)  # (n,)
            (grad,) = torch.autograd.grad(c.sum(), path)  # (n, L, width)
            gradient_sum += (weights[chunk].to(x.device)[:, None, None] * grad.double()).sum(0)
        attributions[row, : eot + 1] = ((x - x_prime).double() * gradient_sum).sum(-1).float().cpu()
        with torch.no_grad():  # C(x') and C(x), which the attributions share out (Gauss-Legendre has no end points)
            ends_at = torch.full((2,), eot, device=x.device)
            features = text_features_from_embeddings(model, torch.stack([x_prime, x]), ends_at)
            c_ends = score(image_features[row].expand(2, -1), features.float(), model.logit_scale)
        baseline_scores.append(float(c_ends[0]))
        scores.append(float(c_ends[1]))
    return IGResult(attributions, torch.tensor(scores), torch.tensor(baseline_scores))


def integrated_gradients(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor,
                         steps: int = DEFAULT_STEPS, batch_size: int = 64, rule: str = "trapezoid",
                         baseline: str = "zero") -> IGResult:
    """Eq. 6: IG of C(im, text) over each text's token embeddings; tokens (B, context), images (B or 1, D)."""
    return _integrate(model, image_features, tokens, steps, None, batch_size, rule, baseline)


def mediated_integrated_gradients(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor, R: torch.Tensor,
                                  layer: int, k: int, steps: int = DEFAULT_STEPS, around: bool = False,
                                  batch_size: int = 64, start: int = 0, rule: str = "trapezoid",
                                  baseline: str = "zero", complement: str = "all-paths") -> IGResult:
    """Eq. 7 inside Eq. 6: IG through H (rotated coordinates [start, start + k) of h R at block ``layer``'s end token).

    ``around=True`` gives the complement: with ``complement="all-paths"`` IG through every other
    path, and the two add up to :func:`integrated_gradients`; with ``"end-state"`` (ig.py's) IG
    through the end-of-text state's other rotated coordinates only.
    """
    width, layers = model.config.text_width, model.config.text_layers
    if tuple(R.shape) != (width, width):
        raise ValueError(f"R must be {width} x {width} (the text width), got {tuple(R.shape)}")
    if not 0 <= layer < layers:
        raise ValueError(f"layer must be in 0..{layers - 1} (a 0-based text block), got {layer}")
    if not (0 <= k <= width and 0 <= start <= width - k):
        raise ValueError(f"the window [{start}, {start + k}) must lie in the {width} rotated coordinates")
    if complement not in COMPLEMENTS:
        raise ValueError(f"complement {complement!r}: use one of {', '.join(COMPLEMENTS)}")
    site = Site(R.detach(), layer, k, "around" if around else "mediated", start, complement)
    return _integrate(model, image_features, tokens, steps, site, batch_size, rule, baseline)


def token_attributions(ids: torch.Tensor | list[int], attributions: torch.Tensor | list[float]) -> list[tuple[str, float]]:
    """(token, attribution) for each BPE piece of one text, "</w>" stripped, start, end and padding left out (ig.py's unit)."""
    pieces = get_tokenizer().token_pieces([int(i) for i in ids])
    values = [float(a) for a in attributions]
    end = [int(i) for i in ids].index(EOT)
    return [(pieces[p].replace("</w>", ""), values[p]) for p in range(1, end)]


def word_attributions(ids: torch.Tensor | list[int], attributions: torch.Tensor | list[float]) -> list[tuple[str, float]]:
    """(word, attribution) for each word of one text: its BPE pieces' attributions summed.

    ``ids`` is one tokenized row (start, pieces, end, padding); the start and end tokens are left out.
    """
    values = [float(a) for a in attributions]
    return [(word, sum(values[p] for p in positions))
            for word, positions in get_tokenizer().word_spans(ids)
            if not (len(positions) == 1 and int(ids[positions[0]]) in (SOT, EOT))]


