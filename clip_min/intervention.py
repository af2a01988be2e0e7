r"""The distributed interchange intervention (Eq. 4) on CLIP's text encoder.

    DII(M, \rho, b, s, Y) = GET(\rho^{-1}(\rho(M)_{Y \leftarrow GET(\rho(M), s, Y)}), b, V_out)

Read from the inside out: run the model on the source s and read (GET) the variables Y of the
rotated model rho(M); run it on the base b with Y set to those values, rotate back, and read
the output V_out (the text features). Following the authors' code, the site is the output of
text block ``layer`` (0-based; they use 10 of 12) at the end-of-text position, the only
position that has seen the whole text under the causal mask and the one projected to the
features. rho(h) = h R (a :class:`~clip_min.rotation.Rotation`) and Y is the first k rotated
coordinates. Swapping them and rotating back changes the base state by a projection:

    h' = \rho^{-1}([\rho(h_s)_{:k}, \rho(h_b)_{k:}]) = h_b + (h_s - h_b) R_{:, :k} R_{:, :k}^T.

Base and source of a pair are one image's caption and description (Eqs. 2 and 3 use both
directions), so :func:`interchange_features` computes all four runs while paying for the
shared prefix (blocks 0..layer) once.
"""

from __future__ import annotations

import torch

from clip_min.model import CLIP
from clip_min.rotation import Rotation


def interchange(h_base: torch.Tensor, h_source: torch.Tensor, R: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 4 at one site: h_b + (h_s - h_b) R_{:, :k} R_{:, :k}^T on row vectors (..., w)."""
    if not 0 <= k <= R.shape[1]:
        raise ValueError(f"k must be in 0..{R.shape[1]} (the rotation's size), got {k}")
    R_k = R[:, :k]  # (w, k): the rotated directions that make up Y
    return h_base + ((h_source - h_base) @ R_k) @ R_k.T


def dii(
    model: CLIP, rotation: Rotation, base_tokens: torch.Tensor, source_tokens: torch.Tensor, layer: int, k: int
) -> torch.Tensor:
    """Eq. 4: (B, embed_dim) features of the base texts with Y taken from the source texts."""
    _check(model, rotation, base_tokens, source_tokens, layer, k)
    n = base_tokens.shape[0]
    # One embed_text on [base; source] so both are cut to one length and run through one batch.
    h, eot = _run_to_site(model, torch.cat([base_tokens, source_tokens]), layer)  # (2B, L, width)
    site = _at_end_token(h, eot)  # (2B, width)
    patched = interchange(site[:n], site[n:], rotation.R, k)  # (B, width)
    return _finish(model, _replace_at_end_token(h[:n], eot[:n], patched), eot[:n], layer)


def interchange_features(
    model: CLIP, rotation: Rotation, base_tokens: torch.Tensor, source_tokens: torch.Tensor, layer: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of base, source, base with Y from source, source with Y from base (Eq. 4 both ways).

    Each is (B, embed_dim). Blocks 0..layer run once on every text, the remaining blocks once on
    each text and once on its patched copy. The two unpatched outputs equal ``model.encode_text``
    of each.
    """
    _check(model, rotation, base_tokens, source_tokens, layer, k)
    n = base_tokens.shape[0]
    # h (2B, L, width) and site (2B, width): the bases in rows :B, their sources in rows B:
    h, eot = _run_to_site(model, torch.cat([base_tokens, source_tokens]), layer)
    site = _at_end_token(h, eot)
    R = rotation.R  # read once: the parametrization recomputes R on every access
    # Row i < B: base i with Y from source i; row B + i: source i with Y from base i.
    swapped = torch.cat([interchange(site[:n], site[n:], R, k), interchange(site[n:], site[:n], R, k)])  # (2B, width)
    # [texts, patched texts]: (4B, L, width) -> (4B, embed_dim)
    out = _finish(model, torch.cat([h, _replace_at_end_token(h, eot, swapped)]), eot.repeat(2), layer)
    plain, patched = out.chunk(2)  # (2B, embed_dim) each: the texts as they are, and with their sites swapped
    return plain[:n], plain[n:], patched[:n], patched[n:]


def one_way_features(
    model: CLIP, rotation: Rotation, base_tokens: torch.Tensor, source_tokens: torch.Tensor, layer: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of base, source, and base with Y from source (Eq. 4 one way), each (B, embed_dim).

    The authors' one-way rows: each row patches its base only. The gradient flows through the
    source's run too, as in theirs.
    """
    _check(model, rotation, base_tokens, source_tokens, layer, k)
    n = base_tokens.shape[0]
    # h (2B, L, width) and site (2B, width): the bases in rows :B, their sources in rows B:
    h, eot = _run_to_site(model, torch.cat([base_tokens, source_tokens]), layer)
    site = _at_end_token(h, eot)
    patched = _replace_at_end_token(h[:n], eot[:n], interchange(site[:n], site[n:], rotation.R, k))  # (B, L, width)
    # [texts, patched bases]: (3B, L, width) -> (3B, embed_dim)
    out = _finish(model, torch.cat([h, patched]), torch.cat([eot, eot[:n]]), layer)
    return out[:n], out[n : 2 * n], out[2 * n :]


def _run_to_site(model: CLIP, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, context) -> output of block ``layer`` (N, L, width) and end-of-text positions (N,)."""
    x, eot = model.embed_text(tokens)
    return model.transformer(x, causal=True, start=0, stop=layer + 1), eot


def _finish(model: CLIP, h: torch.Tensor, eot: torch.Tensor, layer: int) -> torch.Tensor:
    """Run blocks layer + 1 .. on h (N, L, width) and project: (N, embed_dim)."""
    return model.project_text(model.transformer(h, causal=True, start=layer + 1), eot)


def _at_end_token(h: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """(N, L, width) -> (N, width): each row's state at its end-of-text position."""
    return h[torch.arange(h.shape[0], device=h.device), eot]


def _replace_at_end_token(h: torch.Tensor, eot: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """A copy of h (N, L, width) with each row's state at its end-of-text position replaced by ``states`` (N, width)."""
    return h.index_put((torch.arange(h.shape[0], device=h.device), eot), states)


def _check(
    model: CLIP, rotation: Rotation, base_tokens: torch.Tensor, source_tokens: torch.Tensor, layer: int, k: int
) -> None:
    layers, width = model.config.text_layers, model.config.text_width
    if not 0 <= layer < layers:
        raise ValueError(f"layer must be in 0..{layers - 1} (a 0-based text block), got {layer}")
    if not 0 <= k <= width:
        raise ValueError(f"k must be in 0..{width} (the text width), got {k}")
    if rotation.dim != width:
        raise ValueError(f"rotation must be Rotation({width}) to match the text width, got Rotation({rotation.dim})")
    if base_tokens.shape != source_tokens.shape:
        raise ValueError(
            f"base_tokens and source_tokens must have the same shape (one source per base), "
            f"got {tuple(base_tokens.shape)} and {tuple(source_tokens.shape)}"
        )
