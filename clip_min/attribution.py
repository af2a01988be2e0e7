"""Which words make CLIP score a text high? Integrated gradients (Eq. 6) and their mediated form (Eq. 7).

Integrated gradients (Sundararajan et al. 2017) credit each input dimension i with its share of
the change in the score C(im, text) = e^t cos(im, text) between a baseline x' and the input x:

    IG_i(x) = (x_i - x'_i) \\int_0^1 \\frac{\\partial C(x' + t (x - x'))}{\\partial x_i} dt        (Eq. 6)

and the shares add up to the whole change (completeness): \\sum_i IG_i(x) = C(x) - C(x').

Choices made here (ours; each is one line of code below if you prefer another):

- x is the text's token embeddings, token_embedding(ids), one width-sized vector per BPE piece.
  The positional embeddings are added afterwards and held fixed: a word's place is not the word.
- x' keeps the start and end tokens' embeddings and sets every other token's to zero, so the
  baseline is "a text of the same length with nothing in it". The start and end tokens then get
  no attribution (x_i - x'_i = 0), and the words share C(x) - C(x') among themselves.
- The integral is the trapezoid rule on ``steps`` evenly spaced t in [0, 1], run as batches
  of up to ``batch_size`` points. 256 points keep completeness within 1% on the models we tried; the attribute command
  prints the gap so you can raise --steps when it is not.
- A token's attribution is the sum of IG_i over its embedding dimensions; a word's is the sum
  over its BPE pieces.

The mediated gradient (Eq. 7) is the part of the gradient that flows through one site H:

    \\frac{\\partial C}{\\partial x_i} \\Big|_{\\text{via } H} = \\frac{\\partial C}{\\partial H} \\frac{\\partial H}{\\partial x_i}

H is the DAS subspace the intervention (``clip_min.intervention``) swaps: the first k coordinates
of \\rho(h) = h R, with h the output of text block ``layer`` at the end-of-text token. Every
path from the input to C crosses the output of that block, at some position, so the gradient
there splits in two without remainder. With P = R_{:, :k} R_{:, :k}^T, the projection onto H:

- mediated: only the end-of-text state's P-component passes gradient (every other position
  and the complement are detached);
- around: everything else passes (the other positions, and the end-of-text state's (I - P)-component).

The forward values are untouched either way, so mediated + around = total at every t, and the
same holds for the integrated attributions. Mediated IG is Eq. 6 with the mediated gradient.
k = 0 cuts the site: mediated IG is then exactly zero.

Words are then compared with human norms: imageability (Glasgow Norms, Scott et al. 2019) and
concreteness (Brysbaert et al. 2014), read in their released formats. Every occurrence of a
rated word in the texts of one kind (descriptions or captions) is one point: its raw attribution
against the word's mean rating, Pearson r and Spearman rho over the points (Table 3).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from .data.concadia import DataError, read_concadia
from .losses import score
from .model import CLIP
from .train.pipeline import toy_world
from .images import ImageLoadError, load_image, preprocess
from .train.runs import add_step_option, load_model
from .tokenizer import EOT, SOT, get_tokenizer, tokenize
from .train.device import mixed_precision, resolve_device

# Points of the IG integral. On the trained toy IIT-DAS run the worst of 80 texts missed
# completeness by 13.3% at 64 points of the path, 3.0% at 128 and 0.74% at 256.
DEFAULT_STEPS = 256


class NormsError(ValueError):
    """A word-norms file that cannot be read; the message says what was expected."""


@dataclass
class IGResult:
    """Per-token attributions of a batch of texts, and the two scores they explain."""

    attributions: torch.Tensor  # (B, context): sum over the embedding of IG_i; 0 for start, end and padding
    score: torch.Tensor  # (B,) C(im, x)
    baseline_score: torch.Tensor  # (B,) C(im, x')


@dataclass(frozen=True)
class Site:
    """Where Eq. 7 routes the gradient: H = the first k coordinates of h R at block ``layer``'s end token."""

    R: torch.Tensor  # (width, width) the DAS rotation
    layer: int  # 0-based text block whose output holds H
    k: int  # size of H
    carry: str  # "mediated": gradient through H only; "around": through everything but H


def route_gradient(h: torch.Tensor, eot: torch.Tensor, site: Site) -> torch.Tensor:
    """Eq. 7's split: h (N, L, width) with the same values, its gradient let through H only or around H only.

    With P = R_{:, :k} R_{:, :k}^T, the gradient reaching the end-of-text state is multiplied by P
    ("mediated", every other position detached) or by I - P ("around", other positions untouched).
    """
    rows = torch.arange(h.shape[0], device=h.device)
    h_eot = h[rows, eot]  # (N, width)
    R_k = site.R[:, : site.k].to(h.dtype)  # (width, k)
    moving = h_eot - h_eot.detach()  # zero-valued, but carries h_eot's gradient
    through_H = (moving @ R_k) @ R_k.T  # (N, width), zero-valued; passes back P times its gradient
    if site.carry == "mediated":
        return h.detach().index_put((rows, eot), h_eot.detach() + through_H)
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


def _integrate(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor, steps: int,
               site: Site | None, batch_size: int) -> IGResult:
    """Eq. 6 (or Eq. 6 with Eq. 7's gradient when ``site`` is given) for each text of the batch.

    The model should be in eval mode: dropout would make the path's points disagree.
    """
    if image_features.shape[0] == 1:
        image_features = image_features.expand(tokens.shape[0], -1)
    if image_features.shape[0] != tokens.shape[0]:
        raise ValueError(f"one image per text, or one image for all: got {image_features.shape[0]} "
                         f"images and {tokens.shape[0]} texts")
    t, weights = trapezoid(steps)
    image_features = image_features.detach()
    attributions = torch.zeros(tokens.shape, dtype=torch.float32)
    scores, baseline_scores = [], []
    for row in range(tokens.shape[0]):
        eot = int(tokens[row].argmax())
        x = model.token_embedding(tokens[row, : eot + 1]).detach()  # (L, width)
        keep = torch.zeros(eot + 1, 1, dtype=x.dtype, device=x.device)
        keep[[0, eot]] = 1  # the start and end tokens stay as they are in x'
        baseline = x * keep  # (L, width)
        gradient_sum = torch.zeros_like(x, dtype=torch.float64)
        ends = {}
        for chunk in torch.arange(steps).split(batch_size):
            alpha = t[chunk].to(x.device, x.dtype)[:, None, None]  # (n, 1, 1)
            path = (baseline + alpha * (x - baseline)).requires_grad_(True)  # (n, L, width)
            ends_at = torch.full((len(chunk),), eot, device=x.device)
            features = text_features_from_embeddings(model, path, ends_at, site)
            c = score(image_features[row].expand(len(chunk), -1), features.float(), model.logit_scale)  # (n,)
            (grad,) = torch.autograd.grad(c.sum(), path)  # (n, L, width)
            gradient_sum += (weights[chunk].to(x.device)[:, None, None] * grad.double()).sum(0)
            for position, index in enumerate(chunk.tolist()):
                if index in (0, steps - 1):
                    ends[index] = float(c[position].detach())
        attributions[row, : eot + 1] = ((x - baseline).double() * gradient_sum).sum(-1).float().cpu()
        baseline_scores.append(ends[0])
        scores.append(ends[steps - 1])
    return IGResult(attributions, torch.tensor(scores), torch.tensor(baseline_scores))


def integrated_gradients(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor,
                         steps: int = DEFAULT_STEPS, batch_size: int = 64) -> IGResult:
    """Eq. 6: IG of C(im, text) over each text's token embeddings; tokens (B, context), images (B or 1, D)."""
    return _integrate(model, image_features, tokens, steps, None, batch_size)


def mediated_integrated_gradients(model: CLIP, image_features: torch.Tensor, tokens: torch.Tensor, R: torch.Tensor,
                                  layer: int, k: int, steps: int = DEFAULT_STEPS, around: bool = False,
                                  batch_size: int = 64) -> IGResult:
    """Eq. 7 inside Eq. 6: IG through H (the first k coordinates of h R at block ``layer``'s end token).

    ``around=True`` gives the complement: IG through every other path. The two add up to
    :func:`integrated_gradients`.
    """
    width, layers = model.config.text_width, model.config.text_layers
    if tuple(R.shape) != (width, width):
        raise ValueError(f"R must be {width} x {width} (the text width), got {tuple(R.shape)}")
    if not 0 <= layer < layers:
        raise ValueError(f"layer must be in 0..{layers - 1} (a 0-based text block), got {layer}")
    if not 0 <= k <= width:
        raise ValueError(f"k must be in 0..{width}, got {k}")
    site = Site(R.detach(), layer, k, "around" if around else "mediated")
    return _integrate(model, image_features, tokens, steps, site, batch_size)


# ---- words ----------------------------------------------------------------------------------


def word_attributions(ids: torch.Tensor | list[int], attributions: torch.Tensor | list[float]) -> list[tuple[str, float]]:
    """(word, attribution) for each word of one text: its BPE pieces' attributions summed.

    ``ids`` is one tokenized row (start, pieces, end, padding); the start and end tokens are left out.
    """
    values = [float(a) for a in attributions]
    return [(word, sum(values[p] for p in positions))
            for word, positions in get_tokenizer().word_spans(ids)
            if not (len(positions) == 1 and int(ids[positions[0]]) in (SOT, EOT))]


def _shade(value: float, scale: float) -> tuple[tuple[int, int, int], float]:
    """Figure 2's colours: green for positive, magenta for negative; strength = |value| / scale in [0, 1]."""
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    return ((0, 170, 0) if value >= 0 else (200, 0, 200)), strength


def ansi_line(words: list[tuple[str, float]], color: bool = True) -> str:
    """The words of one text with attribution backgrounds (24-bit ANSI), or with [values] when not ``color``."""
    if not color:
        return " ".join(f"{word}[{value:+.3g}]" for word, value in words)
    scale = max((abs(v) for _, v in words), default=0.0)
    parts = []
    for word, value in words:
        rgb, strength = _shade(value, scale)
        # Blend from white, with black letters, so it reads on light and dark terminals alike.
        r, g, b = (round(255 + strength * (c - 255)) for c in rgb)
        parts.append(f"\x1b[30;48;2;{r};{g};{b}m {word} \x1b[0m")
    return "".join(parts)


def html_words(words: list[tuple[str, float]]) -> str:
    """One text as <span>s with Figure 2's backgrounds; the value shows on hover."""
    scale = max((abs(v) for _, v in words), default=0.0)
    spans = []
    for word, value in words:
        (r, g, b), strength = _shade(value, scale)
        spans.append(f'<span style="background: rgba({r}, {g}, {b}, {strength:.2f})" '
                     f'title="{value:+.4f}">{html.escape(word)}</span>')
    return " ".join(spans)


def html_page(title: str, sections: list[str]) -> str:
    """A standalone page of attribution sections (each an HTML fragment)."""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}"
             "span{padding:0.15em 0.25em;border-radius:0.2em}"
             "section{border-top:1px solid #ccc;padding:0.5em 0}"
             "img{float:left;margin-right:1em;width:96px;image-rendering:pixelated}"
             ".label{color:#666;font-size:0.85em;margin-right:0.5em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em}")
    legend = ('<p><span style="background: rgba(0, 170, 0, 0.8)">positive</span> raises C(im, text), '
              '<span style="background: rgba(200, 0, 200, 0.8)">negative</span> lowers it; '
              "the strength is |attribution| over the text's largest.</p>")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{legend}\n"
            + "\n".join(sections) + "\n</body></html>\n")


def image_data_uri(path: str | Path, size: int = 192) -> str:
    """A small JPEG of the image, inline, so the page stands alone."""
    from PIL import Image

    with Image.open(path) as image:
        thumbnail = image.convert("RGB")
        thumbnail.thumbnail((size, size))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---- word norms -----------------------------------------------------------------------------


def _open_text(path: Path):
    if not path.is_file():
        raise NormsError(f"norms file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # spreadsheet exports of both norms are often Latin-1


def _finish_norms(plain: dict[str, float], senses: dict[str, list[float]]) -> dict[str, float]:
    """Words listed only with senses ("bank (money)", "bank (river)") take their senses' mean."""
    for word, values in senses.items():
        plain.setdefault(word, float(np.mean(values)))
    return plain


def read_glasgow_norms(path: str | Path, dimension: str = "IMAG") -> dict[str, float]:
    """Word -> mean rating of ``dimension`` (IMAG: imageability, CNC: concreteness) from the Glasgow Norms CSV.

    Two header rows: dimension names ("Words", "Length", "AROU", "", "", ...), then M / SD / N
    under each dimension. Ambiguous words appear with a sense in brackets; see _finish_norms.
    """
    path = Path(path)
    rows = list(csv.reader(io.StringIO(_open_text(path))))
    expected = f"expected the Glasgow Norms CSV (a 'Words' column, '{dimension}' over an 'M' column in the second row)"
    if len(rows) < 2 or "Words" not in rows[0] or dimension not in rows[0]:
        raise NormsError(f"{path} is not in the Glasgow Norms format: {expected}")
    word_col, mean_col = rows[0].index("Words"), rows[0].index(dimension)
    # Each dimension spans three columns, M, SD and N in the second header row; the mean comes first.
    if mean_col >= len(rows[1]) or rows[1][mean_col].strip() != "M":
        raise NormsError(f"{path}: no 'M' under '{dimension}' in the second header row; {expected}")
    plain, senses = {}, {}
    for line, row in enumerate(rows[2:], start=3):
        if not any(cell.strip() for cell in row):
            continue
        try:
            word, value = row[word_col].strip(), float(row[mean_col])
        except (IndexError, ValueError):
            raise NormsError(f"{path}, line {line}: no number in the {dimension} M column; the file is damaged") from None
        name, bracket, _ = word.partition(" (")
        if bracket:
            senses.setdefault(name.strip().lower(), []).append(value)
        else:
            plain[word.lower()] = value
    return _finish_norms(plain, senses)


def read_brysbaert_concreteness(path: str | Path) -> dict[str, float]:
    """Word -> Conc.M (1..5) from Brysbaert et al. (2014): tab-separated, columns Word, Bigram, Conc.M, ..."""
    path = Path(path)
    lines = [line for line in _open_text(path).splitlines() if line.strip()]
    header = lines[0].split("\t") if lines else []
    if "Word" not in header or "Conc.M" not in header:
        raise NormsError(f"{path} is not Brysbaert et al.'s concreteness file: expected tab-separated "
                         f"columns with 'Word' and 'Conc.M' in the first line")
    word_col, mean_col = header.index("Word"), header.index("Conc.M")
    table = {}
    for line_number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            table[cells[word_col].strip().lower()] = float(cells[mean_col])
        except (IndexError, ValueError):
            raise NormsError(f"{path}, line {line_number}: no number in the Conc.M column; the file is damaged") from None
    return table


@dataclass
class Correlation:
    """Pearson r and Spearman rho of word attributions with a norm, over the words it rates."""

    pearson: float | None  # None when fewer than 3 words, or no spread
    spearman: float | None
    n: int  # word occurrences rated by the norm
    missing: int  # word occurrences (letters only) the norm does not rate


def correlate(words: list[tuple[str, float]], norms: dict[str, float]) -> Correlation:
    """Correlate each word occurrence's attribution with the norm's rating of the word.

    Punctuation and numbers are not words to the norms and are left out without counting;
    words the norm does not list are left out and counted.
    """
    pairs, missing = [], 0
    for word, value in words:
        key = word.lower()
        if key in norms:
            pairs.append((value, norms[key]))
        elif key.isalpha():
            missing += 1
    if len(pairs) < 3:
        return Correlation(None, None, len(pairs), missing)
    a, r = np.array(pairs).T
    if np.ptp(a) == 0 or np.ptp(r) == 0:
        return Correlation(None, None, len(pairs), missing)
    return Correlation(float(stats.pearsonr(a, r)[0]), float(stats.spearmanr(a, r)[0]), len(pairs), missing)


def format_correlation_table(rows: list[tuple[str, str, dict[str, Correlation]]], norm_names: list[str]) -> str:
    """Table 3's layout in markdown: a row per (attribution kind, text kind), r and rho per norm."""
    header = ["attribution", "texts"]
    for name in norm_names:
        header += [f"{name} r", f"{name} ρ", f"{name} words (missing)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:+.2f}"

    for kind, texts, by_norm in rows:
        cells = [kind, texts]
        for name in norm_names:
            c = by_norm[name]
            cells += [number(c.pearson), number(c.spearman), f"{c.n} ({c.missing})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the attribute command --------------------------------------------------------------------


def add_commands(subparsers) -> None:
    """Add ``attribute`` to eval.py's subcommands."""
    p = subparsers.add_parser(
        "attribute",
        help="integrated-gradient word attributions (Eq. 6, 7) and their correlation with word norms (Table 3)",
        description="Attribute C(image, text) to the text's words with integrated gradients (Eq. 6), or through "
                    "the DAS subspace only (Eq. 7, --mediated). Give --text and --image for one pair, or "
                    "--data for Concadia images with their description and caption; with neither, the toy world.",
    )
    p.add_argument("--text", action="append", help="a text to attribute (repeat for several); needs --image")
    p.add_argument("--image", help="the image the texts are scored against")
    p.add_argument("--data", help="Concadia folder: attribute the description and caption of --limit images")
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=10, help="images to attribute from --data (default 10)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"points of the IG integral (default {DEFAULT_STEPS})")
    p.add_argument("--html", help="write the attributions as a coloured HTML page (Figure 2) here")
    p.add_argument("--norms", help="Glasgow Norms CSV: correlate attributions with imageability (IMAG)")
    p.add_argument("--concreteness", help="Brysbaert et al. 2014 concreteness file (tab-separated)")
    p.add_argument("--mediated", action="store_true",
                   help="also attribute through the DAS subspace only (Eq. 7); needs an IIT-DAS or joint --run")
    p.add_argument("--weights", help="CLIP weights (default: the toy base)")
    p.add_argument("--run", help="a train.py run folder: its fine-tuned model (and rotation, for --mediated)")
    add_step_option(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", default="off", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; off by default, as completeness (Eq. 6) wants float32 gradients")
    p.set_defaults(func=attribute_command)


@dataclass
class _Item:
    """One text to attribute, with what the page and the tables need to know about it."""

    kind: str  # "descriptions", "captions" or "texts"
    text: str
    image: Path
    image_index: int  # which row of the image features


def _items(args) -> tuple[list[_Item], list[Path], Path | None]:
    """The texts to attribute, the images they go with, and the default imageability norms (toy world only)."""
    if args.text is not None:
        image = Path(args.image)
        return [_Item("texts", text, image, 0) for text in args.text], [image], None
    norms = None
    data = args.data
    if data is None:
        world, _ = toy_world()
        data, norms = world / "concadia", world / "norms" / "glasgow_norms.csv"
    examples, _ = read_concadia(data, args.split, args.images)
    examples = decodable(examples, args.limit)
    if not examples:
        raise DataError(f"no image of split {args.split!r} of {data} decodes")
    items = []
    for index, e in enumerate(examples):
        items += [_Item("descriptions", e.description, e.image_path, index), _Item("captions", e.caption, e.image_path, index)]
    return items, [e.image_path for e in examples], norms


def decodable(examples: list, limit: int | None = None) -> list:
    """The first ``limit`` examples (all, for None) whose image decodes; the others are counted on stderr, as train.py does."""
    kept, undecodable = [], 0
    for example in examples:
        if limit is not None and len(kept) == limit:
            break
        try:
            load_image(example.image_path)
        except ImageLoadError:
            undecodable += 1
            continue
        kept.append(example)
    if undecodable:
        print(f"left out: {undecodable} images that do not decode", file=sys.stderr)
    return kept


def attribute_command(args) -> int:
    """The ``attribute`` subcommand: attribute, print, optionally write HTML and correlate with norms."""
    if args.weights is not None and args.run is not None:
        raise ValueError("give --weights or --run, not both: a run folder names its own base weights")
    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}")
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if (args.text is None) != (args.image is None):
        raise ValueError("--text and --image go together: the text is scored against the image")
    if args.text is not None and args.data is not None:
        raise ValueError("give either --text with --image, or --data, not both")
    items, images, toy_norms = _items(args)
    norms = _load_norms(args.norms or toy_norms, args.concreteness)

    device = resolve_device(args.device)
    loaded = load_model(args.weights, args.run, device, args.step)
    model = loaded.model.eval()
    kinds = [("IG", None)]
    if args.mediated:
        if loaded.rotation is None:
            raise ValueError("--mediated needs the DAS rotation of an IIT-DAS or joint run: pass --run such a run folder")
        kinds.append(("mediated IG", (loaded.rotation.R.detach(), int(loaded.config["layer"]),
                                      int(loaded.config["intervention_size"]))))
    autocast, _ = mixed_precision(args.amp, device)
    resolution = model.config.image_resolution
    with torch.no_grad(), autocast():
        pixels = torch.stack([preprocess(load_image(path), resolution) for path in images]).to(device)
        image_features = model.encode_image(pixels).float()  # (n_images, embed_dim)

    color = sys.stdout.isatty()
    words_by: dict[tuple[str, str], list[tuple[str, float]]] = {}  # (attribution, text kind) -> words
    sections, worst_gap = [], 0.0
    for item in items:
        tokens = tokenize(item.text, model.config.context_length, truncate=True).to(device)
        features = image_features[item.image_index : item.image_index + 1]
        lines = []
        for name, site in kinds:
            with autocast():
                if site is None:
                    result = integrated_gradients(model, features, tokens, args.steps)
                    change = float(result.score[0] - result.baseline_score[0])
                    gap = abs(float(result.attributions[0].sum()) - change) / max(abs(change), 1e-8)
                    worst_gap = max(worst_gap, gap)
                else:
                    result = mediated_integrated_gradients(model, features, tokens, *site, steps=args.steps)
            words = word_attributions(tokens[0].cpu(), result.attributions[0])
            words_by.setdefault((name, item.kind), []).extend(words)
            print(f"{name:>11} | {ansi_line(words, color)}")
            lines.append(f"<div><span class='label'>{name}</span>{html_words(words)}</div>")
        kind = item.kind[:-1]  # "description", "caption", "text"
        c, c_baseline = float(result.score[0]), float(result.baseline_score[0])
        print(f"{'':>11} | {kind}: C(im, text) = {c:.3f}, C(im, x') = {c_baseline:.3f}")
        sections.append(f"<section><img src='{image_data_uri(item.image)}' alt=''><div class='label'>{kind} · "
                        f"C = {c:.3f}</div>{''.join(lines)}<br style='clear:both'></section>")
    print(f"completeness (Eq. 6): the words' attributions add up to C(x) - C(x') within {100 * worst_gap:.2f}%"
          + ("" if worst_gap < 0.01 else "; raise --steps for a closer sum"))

    table = ""
    if norms:
        rows = [(name, kind, {label: correlate(words_by[(name, kind)], ratings) for label, ratings in norms.items()})
                for name, _ in kinds for kind in dict.fromkeys(item.kind for item in items)]
        table = format_correlation_table(rows, list(norms))
        print("\nTable 3: correlation of word attributions with word norms (ρ: Spearman; words: rated occurrences, "
              "(missing): words the norm does not list)\n" + table)
    if args.html:
        if table:
            sections.append("<h2>Correlation with word norms (Table 3)</h2>" + _markdown_to_html(table))
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(html_page("Word attributions (integrated gradients)", sections), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0


def _load_norms(imageability: str | Path | None, concreteness: str | Path | None) -> dict[str, dict[str, float]]:
    """The norms to correlate with, by column name. Without a Brysbaert file, Glasgow's CNC stands in."""
    norms = {}
    if imageability is not None:
        norms["imageability"] = read_glasgow_norms(imageability, "IMAG")
    if concreteness is not None:
        norms["concreteness"] = read_brysbaert_concreteness(concreteness)
    elif imageability is not None:
        norms["concreteness (Glasgow CNC)"] = read_glasgow_norms(imageability, "CNC")
    return norms


def _markdown_to_html(table: str) -> str:
    lines = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]

    def cells(row: list[str], tag: str) -> str:
        return "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row)

    return "<table><tr>" + cells(head, "th") + "</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</table>"
