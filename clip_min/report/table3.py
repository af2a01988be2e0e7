"""Table 3 (Appendix E): do the words a model credits agree with how imageable and concrete they are?

    texts     --sample texts (the paper's text): 100 descriptions and 100 captions drawn at random
              (a fixed seed) from Concadia's test split, each with a word rated in both norms;
              --sample images (the authors' ig.py): both texts of 100 test images whose caption and
              description each hold a whitespace word that both norms list (exact case), seed 42
    cell      Pearson r with the norm: --unit word (ours), of every rated word occurrence of the 200
              texts, pooled; --unit token (ig.py), of each unique BPE token's mean attribution over
              the 200 texts ("420 unique tokens")
    rows      each model (base CLIP, and each setting's seeded runs) x mediation: none (Eq. 6),
              through the DAS site (Eq. 7) or around it; --window trained is the subspace the run
              swapped, [0, k); --window authors is ig.py's rotated [k/2, 3k/2), [128, 384)
    around    --complement all-paths (ours): every path that avoids the window, so through +
              around = none; --complement end-state (integrated_gradients_patch.py): only the
              end-of-text state's coordinates outside the window, the block's other positions in
              neither row
    no rotation  a model without one (base CLIP, behavioral runs): --unrotated identity, the
              identity rotation of the release's static_search=True, so the window is standard-basis
              coordinates (a --rotation-from is then noted and not used); --unrotated borrowed, the
              site of --rotation-from RUN (or no mediation)
    norm words  --norm-words folded (ours): lower case, Glasgow's senses averaged; exact (ig.py):
              the files' strings as written
    model     --step selected (Appendix C's step) or last (the release measures after fit, with
              early stopping off: the last epoch's model)
    integral  --ig trapezoid with --baseline zero (ours), or --ig gauss-legendre (50 points) with
              --baseline eos (ig.py's [BOS, EOS, ..., EOS])
    interval  mean and 95% t interval over the seeds

--recipe authors or paper picks every default above (RECIPE_OPTIONS); it defaults to the runs'
own. The paper's "through" rows repeat the concreteness value in the imageability column: ig.py
fills that cell from the concreteness result (docs/08-integrated-gradients.md).
``clip_min.attribution`` computes each attribution.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..attribution import (BASELINES, COMPLEMENTS, RULES, check_steps, integrated_gradients, mediated_integrated_gradients,
                           token_attributions, word_attributions)
from ..data.concadia import DataError, Example, read_concadia
from ..data.norms import load_norms
from ..data.toy import CONCADIA_SUBDIR, CONCRETENESS_FILE, NORMS_FILE, toy_world_dir
from ..images import load_image, preprocess
from ..tokenizer import tokenize
from ..train.runs import RECIPE_STEP, STEPS, LoadedRun, RunError, load_model, load_run, read_run_config
from .attribute import decodable
from ..train.config import RECIPES, SAMPLE_SEED
from .correlation import correlate_tokens, correlate_with_norms
from .selection import format_interval, mean_interval, setting_label

MEDIATIONS = ("none", "through the site", "around it")
WINDOWS = ("trained", "authors")
UNROTATED = ("identity", "borrowed")
NORM_WORDS = ("folded", "exact")


@dataclass(frozen=True)
class Options:
    """How Table 3 is computed; RECIPE_OPTIONS holds each recipe's choice."""

    unit: str  # word: every rated word occurrence; token: each unique BPE token's mean
    sample: str  # texts: n descriptions and n captions drawn apart; images: both texts of n images
    ig: str  # the integral's rule, attribution.RULES
    baseline: str  # attribution.BASELINES
    steps: int  # points of the integral
    window: str  # trained: rotated [0, k); authors: ig.py's [k/2, 3k/2)
    complement: str  # what "around it" lets through, attribution.COMPLEMENTS
    unrotated: str  # a model without a rotation: identity (static_search=True) or borrowed (--rotation-from)
    norm_words: str  # folded: lower case, senses averaged; exact: the norms' strings as written (ig.py)
    step: str  # which model of each run: Appendix C's selected step, or the last


# The paper's Appendix E says what is correlated, not how; where it is silent the paper recipe
# keeps ours. The authors' column is ig.py and integrated_gradients_patch.py, on the model
# RECIPE_STEP names.
RECIPE_OPTIONS = {
    "paper": dict(unit="word", sample="texts", ig="trapezoid", baseline="zero", steps=128, window="trained",
                  complement="all-paths", unrotated="borrowed", norm_words="folded", step=RECIPE_STEP["paper"]),
    "authors": dict(unit="token", sample="images", ig="gauss-legendre", baseline="eos", steps=50, window="authors",
                    complement="end-state", unrotated="identity", norm_words="exact", step=RECIPE_STEP["authors"]),
}


# The paper recipe's integral on the toy world: a toy text is short, and 64 points give the toy Table 3
# of 128 to within 0.01 in half the time (about a minute for three models on two CPU cores).
TOY_STEPS = 64


def window_start(window: str, k: int, width: int) -> int:
    """Where the mediation window starts in the rotated coordinates: 0, or ig.py's k/2 ([128, 384) at k = 256)."""
    start = 0 if window == "trained" else k // 2
    if start + k > width:
        raise ValueError(f"--window {window}: rotated [{start}, {start + k}) does not fit the text width {width}")
    return start


def rated_words(text: str, norms: dict[str, dict[str, float]]) -> list[str]:
    """The words of ``text`` (as the attributions split it) that every norm rates."""
    ids = tokenize(text, truncate=True)[0]
    return [word for word, _ in word_attributions(ids, torch.zeros(len(ids)))
            if all(word.lower() in ratings for ratings in norms.values())]


def sample_texts(examples: list[Example], norms: dict[str, dict[str, float]], n: int = 100,
                 seed: int = 0) -> list[tuple[str, Example]]:
    """Appendix E's sample: n descriptions and n captions at random, each with a word rated in every norm."""
    rng = random.Random(seed)
    picked = []
    for kind in ("description", "caption"):
        order = list(examples)
        rng.shuffle(order)
        chosen = [e for e in order if rated_words(getattr(e, kind), norms)][:n]
        if len(chosen) < n:
            print(f"only {len(chosen)} {kind}s of the split have a word rated in every norm (wanted {n})",
                  file=sys.stderr)
        picked += [(kind, e) for e in chosen]
    return picked


def authors_sample(examples: list[Example], norms: dict[str, dict[str, float]], n: int = 100,
                   seed: int = SAMPLE_SEED) -> list[tuple[str, Example]]:
    """ig.py's sample: both texts of n images whose caption and description each hold a word every norm lists.

    A word is a whitespace-separated piece matched exactly (case and punctuation count), as there.
    numpy's RandomState(seed).choice is the call pandas' DataFrame.sample(n, random_state=seed) makes.
    """
    def listed(text: str) -> bool:
        return any(all(word in ratings for ratings in norms.values()) for word in text.split())

    eligible = [e for e in examples if listed(e.caption) and listed(e.description)]
    if len(eligible) < n:
        print(f"only {len(eligible)} images of the split have a listed word in both texts (wanted {n})", file=sys.stderr)
    rows = np.random.RandomState(seed).choice(len(eligible), size=min(n, len(eligible)), replace=False)
    chosen = [eligible[i] for i in rows.tolist()]
    return [("description", e) for e in chosen] + [("caption", e) for e in chosen]


def model_correlations(loaded: LoadedRun, picked: list[tuple[str, Example]], norms: dict[str, dict[str, float]],
                       site: tuple[torch.Tensor, int, int] | None, options: Options,
                       device: str) -> dict[str, dict[str, float | None]]:
    """{mediation: {norm: Pearson r}} for one model over the pooled texts; mediations need a site."""
    model = loaded.model.eval()
    resolution = model.config.image_resolution
    paths = list(dict.fromkeys(e.image_path for _, e in picked))
    with torch.no_grad():
        pixels = torch.stack([preprocess(load_image(p), resolution) for p in paths]).to(device)
        features = dict(zip(paths, model.encode_image(pixels).float()))  # (embed_dim,) each
    result = {}
    for mediation in MEDIATIONS:
        if mediation != "none" and site is None:
            result[mediation] = {name: None for name in norms}
            continue
        units = []
        integral = dict(steps=options.steps, rule=options.ig, baseline=options.baseline)
        for kind, example in picked:
            tokens = tokenize(getattr(example, kind), model.config.context_length, truncate=True).to(device)
            image = features[example.image_path][None]
            if mediation == "none":
                ig = integrated_gradients(model, image, tokens, **integral)
            else:
                R, layer, k = site
                ig = mediated_integrated_gradients(model, image, tokens, R.to(device), layer, k,
                                                   around=mediation == "around it", complement=options.complement,
                                                   start=window_start(options.window, k, R.shape[0]), **integral)
            split = token_attributions if options.unit == "token" else word_attributions
            units += split(tokens[0].cpu(), ig.attributions[0])
        correlate = correlate_tokens if options.unit == "token" else correlate_with_norms
        result[mediation] = {name: correlate(units, ratings).pearson for name, ratings in norms.items()}
    return result


@dataclass
class Entry:
    """One model of Table 3: its label (row group), the loaded model, the site it is mediated through."""

    label: str
    loaded: LoadedRun
    site: tuple[torch.Tensor, int, int] | None  # (R, block, k): LoadedRun.das_site, identity_site or borrowed


def table3(entries: list[Entry], picked, norms, options: Options, device: str) -> dict[str, dict[str, dict]]:
    """{label: {mediation: {norm: (mean, half-width) or None}}} over the entries of each label."""
    values: dict[str, list[dict]] = {}
    for entry in entries:
        print(f"attributing {len(picked)} texts with {entry.label} ({entry.loaded.folder})", file=sys.stderr)
        values.setdefault(entry.label, []).append(
            model_correlations(entry.loaded, picked, norms, entry.site, options, device))
    table = {}
    for label, runs in values.items():
        table[label] = {}
        for mediation in MEDIATIONS:
            table[label][mediation] = {}
            for name in norms:
                rs = [run[mediation][name] for run in runs if run[mediation][name] is not None]
                table[label][mediation][name] = mean_interval(rs) if rs else None
    return table


def format_table3(table: dict, norm_names: list[str], picked, options: Options) -> str:
    header = ["model", "mediation"] + [f"{name} r" for name in norm_names]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(norm_names)]
    for label, rows in table.items():
        for mediation, cells in rows.items():
            lines.append("| " + " | ".join([label, mediation] + [format_interval(cells[n], percent=False)
                                                                for n in norm_names]) + " |")
    kinds = [kind for kind, _ in picked]
    unit = ("each unique BPE token's mean attribution" if options.unit == "token" else "every rated word occurrence")
    texts = (f"both texts of {kinds.count('caption')} test images" if options.sample == "images"
             else f"{kinds.count('description')} descriptions and {kinds.count('caption')} captions of the test split")
    window = "rotated [0, k)" if options.window == "trained" else "rotated [k/2, 3k/2), ig.py's [128, 384) at k = 256"
    around = ("every path that avoids the window" if options.complement == "all-paths"
              else "the end-of-text state outside the window, the block's other positions in neither row")
    unrotated = ("the identity rotation (standard-basis coordinates)" if options.unrotated == "identity"
                 else "a borrowed IIT-DAS site")
    return ("\n".join(lines) + f"\n\nPearson r over {unit} of {texts}, pooled; norm words {options.norm_words}; "
            f"integrated gradients: {options.ig}, {options.steps} points, baseline {options.baseline}; mediation "
            f"window: {options.window}, {window}; around it: {around}; models without a rotation: {unrotated}; "
            f"each run's {options.step} step; mean ± 95% t interval over seeds. -: no site to mediate through "
            "(give --rotation-from).")


def identity_site(width: int, config: dict, folder) -> tuple[torch.Tensor, int, int]:
    """The release's site for a model without a rotation (static_search=True): R = I at the run's block and k."""
    layer, k = config.get("layer"), config.get("intervention_size")
    if layer is None or k is None:
        raise RunError(f"{folder}: its config.json names no layer and intervention_size, where an identity "
                       "window would sit; pass --unrotated borrowed with --rotation-from an IIT-DAS run")
    return torch.eye(width), int(layer), int(k)


def entries_for_runs(folders: list[str], rotation_from: str | None, device: str, options: Options) -> list[Entry]:
    """The base model of the runs and each run, each with its own site, or for a model without a rotation
    the identity site (``options.unrotated == "identity"``) or --rotation-from's."""
    loaded = [load_run(f, device, options.step) for f in folders]
    borrowed = load_run(rotation_from, device, options.step).das_site() if rotation_from else None
    bases = {run.config.get("weights") for run in loaded}
    if len(bases) != 1:
        raise ValueError("table3 --runs: the runs start from different base weights; give runs of one base")
    base = load_model(bases.pop(), None, device)
    width = base.model.config.text_width

    def unrotated(config: dict, folder) -> tuple[torch.Tensor, int, int] | None:
        return identity_site(width, config, folder) if options.unrotated == "identity" else borrowed

    entries = [Entry("CLIP (base)", base, unrotated(loaded[0].config, loaded[0].folder))]
    for run in loaded:
        label = setting_label((run.config.get("objective"), run.config.get("finetune")))
        entries.append(Entry(label, run, run.das_site() or unrotated(run.config, run.folder)))
    return entries


def resolve_options(args, recipe: str, steps: int | None = None) -> Options:
    """The command's flags over the recipe's Table 3 choices (RECIPE_OPTIONS); ``steps``, if given, over the recipe's."""
    chosen = {**RECIPE_OPTIONS[recipe], **({} if steps is None else dict(steps=steps))}
    if args.rotation_from is not None and args.unrotated == "identity":
        raise ValueError("--rotation-from with --unrotated identity: a model without a rotation takes one or the other")
    given = {name: getattr(args, name) for name in chosen}
    options = Options(**{**chosen, **{name: value for name, value in given.items() if value is not None}})
    if args.rotation_from is not None and options.unrotated == "identity":
        # One command line serves both recipes: the site it names is the paper recipe's.
        print(f"--rotation-from is not used: the {recipe} recipe mediates models without a rotation through the "
              "identity (--unrotated borrowed uses it)", file=sys.stderr)
    return options


def draw_sample(examples: list[Example], norms, options: Options, n: int, seed: int | None):
    """The texts Table 3 attributes, by ``options.sample``; seed None: 0 for texts, ig.py's 42 for images."""
    if options.sample == "images":
        return authors_sample(examples, norms, n, SAMPLE_SEED if seed is None else seed)
    return sample_texts(examples, norms, n, 0 if seed is None else seed)


def table3_command(args) -> int:
    from ..train.device import resolve_device

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.steps is not None:
        check_steps(args.steps)
    device = resolve_device(args.device)
    config = read_run_config(args.runs[0])
    data = args.data or config.get("data")
    # A toy run records the toy world's folder as its data; the toy world's two norms stand in for the real ones.
    toy = data is None or Path(data) == toy_world_dir() / CONCADIA_SUBDIR
    # Runs from before the recipes were recorded followed the paper's.
    recipe = args.recipe or config.get("recipe") or "paper"
    options = resolve_options(args, recipe, steps=TOY_STEPS if toy and recipe == "paper" else None)
    norm_files = (args.norms, args.concreteness)
    if toy:
        from ..train.pipeline import toy_world

        world, _ = toy_world()
        data = world / CONCADIA_SUBDIR
        norm_files = (args.norms or world / NORMS_FILE, args.concreteness or world / CONCRETENESS_FILE)
    norms = load_norms(*norm_files, exact=options.norm_words == "exact")
    if not norms:
        raise ValueError("give --norms (the Glasgow Norms CSV) and --concreteness (Brysbaert et al.'s file)")
    examples, _ = read_concadia(data, args.split, args.images)
    picked = draw_sample(decodable(examples), norms, options, args.n, args.seed)
    if not picked:
        raise DataError(f"no text of split {args.split!r} has a word rated in every norm")
    entries = entries_for_runs(args.runs, args.rotation_from, device, options)
    print(format_table3(table3(entries, picked, norms, options, device), list(norms), picked, options))
    return 0


def toy_table3(folders: dict[tuple[str, str, int], str], seeds: int, n: int = 100, recipe: str = "paper") -> str:
    """The toy Table 3 from ``eval.py table --toy``'s runs: base, behavioral and IIT-DAS (LoRA) per seed.

    Under the paper's recipe the base and the behavioral run of seed s are mediated through the
    IIT-DAS run of seed s, and the integral takes 64 points here, a toy text being short; under the
    authors', through the identity window at the same block. The toy norms are Glasgow-style
    lower-case words, so both ways of matching them agree.
    """
    from ..train.pipeline import toy_world

    world, _ = toy_world()
    options = Options(**{**RECIPE_OPTIONS[recipe], **(dict(steps=TOY_STEPS) if recipe == "paper" else {})})
    norms = load_norms(world / NORMS_FILE, world / CONCRETENESS_FILE, exact=options.norm_words == "exact")
    examples, _ = read_concadia(world / CONCADIA_SUBDIR, "test")
    picked = draw_sample(examples, norms, options, n, None)
    entries = []
    for seed in range(seeds):
        iit = load_run(folders["iit-das", "lora", seed], step=options.step)
        behavioral = load_run(folders["behavioral", "lora", seed], step=options.step)
        base = load_model(behavioral.config["weights"], None)
        if options.unrotated == "identity":
            unrotated = identity_site(base.model.config.text_width, iit.config, iit.folder)
        else:
            unrotated = iit.das_site()
        entries += [Entry("CLIP (base)", base, unrotated),
                    Entry(setting_label(("behavioral", "lora")), behavioral, unrotated),
                    Entry(setting_label(("iit-das", "lora")), iit, iit.das_site())]
    return format_table3(table3(entries, picked, norms, options, "cpu"), list(norms), picked, options)


def add_commands(subparsers) -> None:
    """Add ``table3`` to eval.py's subcommands."""
    p = subparsers.add_parser("table3", help="Table 3: word attributions against word norms, over seeded runs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (their shared base is the first row)")
    p.add_argument("--rotation-from", help="an IIT-DAS or joint run whose site mediates models without a rotation "
                                           "(with --unrotated borrowed, the paper recipe's)")
    p.add_argument("--data", help="Concadia folder (default: the runs', else the toy world's)")
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--norms", help="Glasgow Norms CSV (imageability); default on the toy world: its own")
    p.add_argument("--concreteness", help="Brysbaert et al. 2014 concreteness file (else Glasgow's CNC); default on "
                                          "the toy world: its own")
    p.add_argument("--n", type=int, default=100, help="descriptions and captions each (default 100)")
    p.add_argument("--seed", type=int, help="seed of the random sample (default: 0 for --sample texts, 42 for images)")
    p.add_argument("--recipe", choices=RECIPES, help="the defaults of every option below (RECIPE_OPTIONS; "
                                                     "default: the first run's recipe)")
    p.add_argument("--unit", choices=["word", "token"], help="word occurrences (paper) or unique BPE tokens (authors)")
    p.add_argument("--sample", choices=["texts", "images"],
                   help="n descriptions and n captions (paper) or both texts of n images (authors)")
    p.add_argument("--ig", choices=RULES, help="the integral's rule (paper: trapezoid; authors: gauss-legendre)")
    p.add_argument("--baseline", choices=BASELINES, help="x': zero embeddings (paper) or the end token's (authors)")
    p.add_argument("--steps", type=int, help="points of the IG integral (paper: 128, on the toy world 64; authors: 50)")
    p.add_argument("--window", choices=WINDOWS, help="mediation window: the trained [0, k) (paper) or the "
                                                      "authors' rotated [k/2, 3k/2), [128, 384) at k = 256")
    p.add_argument("--complement", choices=COMPLEMENTS, help="what 'around it' lets through: every path that avoids "
                   "the window (paper) or the end-of-text state outside it only (authors)")
    p.add_argument("--unrotated", choices=UNROTATED, help="models without a rotation: the identity rotation (authors) "
                   "or the site of --rotation-from (paper)")
    p.add_argument("--norm-words", choices=NORM_WORDS, help="join words to the norms lower-cased with senses averaged "
                   "(paper) or by exact string (authors)")
    p.add_argument("--step", choices=STEPS, help="each run's model: Appendix C's selected step (paper) or its last "
                   "(authors)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=table3_command)
