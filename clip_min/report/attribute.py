"""``eval.py attribute``: which words make a model score a text high (Figure 2), and do they agree with word norms (Table 3)?

    python eval.py attribute                                           # the toy world's base, 10 test images
    python eval.py attribute --image cat.jpg --text "A cat asleep on a sofa." --html words.html
    python eval.py attribute --run runs/iit --mediated --data concadia --norms glasgow.csv

Each text's words are credited with integrated gradients (Eq. 6; clip_min/attribution.py), and
with --mediated also through the run's DAS site only (Eq. 7). Every occurrence of a rated word in
the texts of one kind (descriptions or captions) is one point: its attribution against the
word's mean rating (clip_min/data/norms.py), Pearson r and Spearman rho over the points
(clip_min/report/correlation.py), in Table 3's layout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attribution import DEFAULT_STEPS, check_steps, integrated_gradients, mediated_integrated_gradients, word_attributions
from ..data.concadia import DataError, read_concadia
from ..data.norms import load_norms
from ..data.toy import CONCADIA_SUBDIR, CONCRETENESS_FILE, NORMS_FILE
from ..images import ImageLoadError, load_image, preprocess
from ..tokenizer import EMPTY_TEXT, empty_once_cleaned, tokenize
from ..train.device import mixed_precision, resolve_device
from ..train.pipeline import toy_world
from ..train.runs import add_step_option, load_model
from .correlation import correlate_with_norms, format_correlation_table
from ..files import atomic_write_text, check_output
from .html import ansi_line, attribution_page, page_scale, table_html, text_section


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


def _items(args) -> tuple[list[_Item], list[Path], tuple[Path | None, Path | None]]:
    """The texts to attribute, the images they go with, and the default norms files (the toy world's, else none)."""
    if args.text is not None:
        image = Path(args.image)
        return [_Item("texts", text, image, 0) for text in args.text], [image], (None, None)
    norms = (None, None)
    data = args.data
    if data is None:
        world, _ = toy_world()
        data, norms = world / CONCADIA_SUBDIR, (world / NORMS_FILE, world / CONCRETENESS_FILE)
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
    check_steps(args.steps)
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if (args.text is None) != (args.image is None):
        raise ValueError("--text and --image go together: the text is scored against the image")
    if args.text is not None and args.data is not None:
        raise ValueError("give either --text with --image, or --data, not both")
    empty = [text for text in args.text or [] if empty_once_cleaned(text)]
    if empty:
        raise ValueError(f"--text {empty[0]!r} is empty once cleaned ({EMPTY_TEXT}); give texts with words")
    if args.html:
        inputs = [(f"--{name}", getattr(args, name)) for name in ("image", "data", "images", "weights", "run", "norms",
                                                                  "concreteness")]
        check_output(args.html, "--html", inputs, holds=False)
    items, images, (toy_imageability, toy_concreteness) = _items(args)
    norms = load_norms(args.norms or toy_imageability, args.concreteness or toy_concreteness)

    device = resolve_device(args.device)
    loaded = load_model(args.weights, args.run, device, args.step)
    model = loaded.model.eval()
    kinds = [("IG", None)]
    if args.mediated:
        if loaded.rotation is None:
            raise ValueError("--mediated needs the DAS rotation of an IIT-DAS or joint run: pass --run such a run folder")
        kinds.append(("mediated IG", loaded.das_site()))
    autocast, _ = mixed_precision(args.amp, device)
    resolution = model.config.image_resolution
    with torch.no_grad(), autocast():
        pixels = torch.stack([preprocess(load_image(path), resolution) for path in images]).to(device)
        image_features = model.encode_image(pixels).float()  # (n_images, embed_dim)

    words_by: dict[tuple[str, str], list[tuple[str, float]]] = {}  # (attribution, text kind) -> words
    shown, worst_gap = [], 0.0  # shown: per text, its label, (name, words) per attribution, C and C(x')
    for item in items:
        tokens = tokenize(item.text, model.config.context_length, truncate=True).to(device)
        features = image_features[item.image_index : item.image_index + 1]
        rows = []
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
            rows.append((name, words))
        label = item.kind[:-1] if item.kind != "texts" else f"text {len(shown) + 1}"  # "description", "text 2"
        shown.append((item, label, rows, float(result.score[0]), float(result.baseline_score[0])))

    scale = page_scale([words for _, _, rows, _, _ in shown for _, words in rows])
    color = sys.stdout.isatty()
    sections = []
    for item, label, rows, c, c_baseline in shown:
        for name, words in rows:
            print(f"{name:>11} | {ansi_line(words, color, scale)}")
        print(f"{'':>11} | {label}: C(im, text) = {c:.3f}, C(im, x') = {c_baseline:.3f}")
        sections.append(text_section(item.image, label, c, rows, scale))
    print(f"completeness (Eq. 6): the words' attributions add up to C(x) - C(x') within {100 * worst_gap:.2f}%"
          + ("" if worst_gap < 0.01 else "; raise --steps for a closer sum"))

    table = ""
    if norms:
        rows = [(name, kind, {label: correlate_with_norms(words_by[(name, kind)], ratings) for label, ratings in norms.items()})
                for name, _ in kinds for kind in dict.fromkeys(item.kind for item in items)]
        table = format_correlation_table(rows, list(norms))
        print("\nTable 3: correlation of word attributions with word norms (ρ: Spearman; words: rated occurrences, "
              "(missing): words the norm does not list)\n" + table)
    if args.html:
        if table:
            sections.append("<h2>Correlation with word norms (Table 3)</h2>" + table_html(table))
        atomic_write_text(args.html, attribution_page("Word attributions (integrated gradients)", sections, scale))
        print(f"wrote {args.html}")
    return 0
