"""Table 3 (Appendix E): do the words a model credits agree with how imageable and concrete they are?

    texts     100 descriptions and 100 captions drawn at random (a fixed seed) from Concadia's test
              split, each with at least one word rated in both norms
    cell      Pearson r between the integrated-gradient attribution of every rated word occurrence
              of the 200 texts (descriptions and captions pooled) and the word's norm
    rows      each model (base CLIP, and each setting's seeded runs) x mediation: none (Eq. 6),
              through the DAS site (Eq. 7) or around it
    interval  mean and 95% t interval over the seeds

A model without a rotation of its own (base CLIP, behavioral runs) is mediated through another
run's site (``--rotation-from RUN``); ``clip_min.attribution`` computes each attribution.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

import torch

from ..attribution import integrated_gradients, mediated_integrated_gradients, word_attributions
from ..data.concadia import DataError, Example, read_concadia
from ..data.norms import load_norms
from ..images import load_image, preprocess
from ..tokenizer import tokenize
from ..train.runs import LoadedRun, load_model, load_run
from .attribute import decodable
from .correlation import correlate_with_norms
from .selection import format_interval, mean_interval, setting_label

MEDIATIONS = ("none", "through the site", "around it")


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


def model_correlations(loaded: LoadedRun, picked: list[tuple[str, Example]], norms: dict[str, dict[str, float]],
                       site: tuple[torch.Tensor, int, int] | None, steps: int, device: str) -> dict[str, dict[str, float | None]]:
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
        words = []
        for kind, example in picked:
            tokens = tokenize(getattr(example, kind), model.config.context_length, truncate=True).to(device)
            image = features[example.image_path][None]
            if mediation == "none":
                ig = integrated_gradients(model, image, tokens, steps)
            else:
                R, layer, k = site
                ig = mediated_integrated_gradients(model, image, tokens, R.to(device), layer, k,
                                                   steps=steps, around=mediation == "around it")
            words += word_attributions(tokens[0].cpu(), ig.attributions[0])
        result[mediation] = {name: correlate_with_norms(words, ratings).pearson for name, ratings in norms.items()}
    return result


@dataclass
class Entry:
    """One model of Table 3: its label (row group), the loaded model, the site it is mediated through."""

    label: str
    loaded: LoadedRun
    site: tuple[torch.Tensor, int, int] | None  # (R, block, k), from LoadedRun.das_site


def table3(entries: list[Entry], picked, norms, steps: int, device: str) -> dict[str, dict[str, dict]]:
    """{label: {mediation: {norm: (mean, half-width) or None}}} over the entries of each label."""
    values: dict[str, list[dict]] = {}
    for entry in entries:
        print(f"attributing {len(picked)} texts with {entry.label} ({entry.loaded.folder})", file=sys.stderr)
        values.setdefault(entry.label, []).append(
            model_correlations(entry.loaded, picked, norms, entry.site, steps, device))
    table = {}
    for label, runs in values.items():
        table[label] = {}
        for mediation in MEDIATIONS:
            table[label][mediation] = {}
            for name in norms:
                rs = [run[mediation][name] for run in runs if run[mediation][name] is not None]
                table[label][mediation][name] = mean_interval(rs) if rs else None
    return table


def format_table3(table: dict, norm_names: list[str], picked) -> str:
    header = ["model", "mediation"] + [f"{name} r" for name in norm_names]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(norm_names)]
    for label, rows in table.items():
        for mediation, cells in rows.items():
            lines.append("| " + " | ".join([label, mediation] + [format_interval(cells[n], percent=False)
                                                                for n in norm_names]) + " |")
    kinds = [kind for kind, _ in picked]
    return ("\n".join(lines) + f"\n\nPearson r over every rated word of {kinds.count('description')} descriptions and "
            f"{kinds.count('caption')} captions of the test split, pooled; mean ± 95% t interval over seeds. "
            "-: no site to mediate through (give --rotation-from).")


def entries_for_runs(folders: list[str], rotation_from: str | None, device: str, step: str) -> list[Entry]:
    """The base model of the runs and each run, each with its own site or --rotation-from's."""
    loaded = [load_run(f, device, step) for f in folders]
    borrowed = load_run(rotation_from, device, step).das_site() if rotation_from else None
    bases = {run.config.get("weights") for run in loaded}
    if len(bases) != 1:
        raise ValueError("table3 --runs: the runs start from different base weights; give runs of one base")
    base = bases.pop()
    entries = [Entry("CLIP (base)", load_model(base, None, device), borrowed)]
    for run in loaded:
        label = setting_label((run.config.get("objective"), run.config.get("finetune")))
        entries.append(Entry(label, run, run.das_site() or borrowed))
    return entries


def table3_command(args) -> int:
    from ..train.device import resolve_device

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    device = resolve_device(args.device)
    config = load_run(args.runs[0], device, args.step).config
    data = args.data or config.get("data")
    toy_norms = None
    if data is None:
        from ..train.pipeline import toy_world

        world, _ = toy_world()
        data, toy_norms = world / "concadia", world / "norms" / "glasgow_norms.csv"
    norms = load_norms(args.norms or toy_norms, args.concreteness)
    if not norms:
        raise ValueError("give --norms (the Glasgow Norms CSV) and --concreteness (Brysbaert et al.'s file)")
    examples, _ = read_concadia(data, args.split, args.images)
    picked = sample_texts(decodable(examples), norms, args.n, args.seed)
    if not picked:
        raise DataError(f"no text of split {args.split!r} has a word rated in every norm")
    entries = entries_for_runs(args.runs, args.rotation_from, device, args.step)
    print(format_table3(table3(entries, picked, norms, args.steps, device), list(norms), picked))
    return 0


def toy_table3(folders: dict[tuple[str, str, int], str], seeds: int, steps: int = 64, n: int = 100) -> str:
    """The toy Table 3 from ``eval.py table --toy``'s runs: base, behavioral and IIT-DAS (LoRA) per seed.

    The base and the behavioral run of seed s are mediated through the IIT-DAS run of seed s.
    """
    from ..train.pipeline import toy_world

    world, _ = toy_world()
    norms = load_norms(world / "norms" / "glasgow_norms.csv", None)
    examples, _ = read_concadia(world / "concadia", "test")
    picked = sample_texts(examples, norms, n)
    entries = []
    for seed in range(seeds):
        iit = load_run(folders["iit-das", "lora", seed])
        behavioral = load_run(folders["behavioral", "lora", seed])
        base = behavioral.config["weights"]
        site = iit.das_site()
        entries += [Entry("CLIP (base)", load_model(base, None), site),
                    Entry(setting_label(("behavioral", "lora")), behavioral, site),
                    Entry(setting_label(("iit-das", "lora")), iit, site)]
    return format_table3(table3(entries, picked, norms, steps, "cpu"), list(norms), picked)


def add_commands(subparsers) -> None:
    """Add ``table3`` to eval.py's subcommands."""
    from ..train.runs import add_step_option

    p = subparsers.add_parser("table3", help="Table 3: word attributions against word norms, over seeded runs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (their shared base is the first row)")
    p.add_argument("--rotation-from", help="an IIT-DAS or joint run whose site mediates models without a rotation")
    p.add_argument("--data", help="Concadia folder (default: the runs', else the toy world's)")
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--norms", help="Glasgow Norms CSV (imageability); default on the toy world: its norms")
    p.add_argument("--concreteness", help="Brysbaert et al. 2014 concreteness file (else Glasgow's CNC)")
    p.add_argument("--n", type=int, default=100, help="descriptions and captions each (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample (default 0)")
    p.add_argument("--steps", type=int, default=128, help="points of the IG integral (default 128)")
    p.add_argument("--device", default="auto")
    add_step_option(p)
    p.set_defaults(func=table3_command)
