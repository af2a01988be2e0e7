"""``eval.py prefer``: which descriptions each model rewards, read off a policy aligned with it.

    python eval.py prefer                                  # the toy base on the toy world
    python eval.py prefer --base --run runs/beh runs/iit   # base, behavioral, IIT-DAS side by side
    python eval.py prefer --weights ViT-B-32.pt --task food-101 --pool phrases.tsv --html prefer.html

Concepts are the classes of transfer tasks (by default the toy world's colour and background
tasks), each with its images. For every model, a policy over the phrase pool is aligned with the
model's score (clip_min/prefer.py) and read: the share of each kind of phrase in its descriptions,
its top phrases per concept, and the reward it gained over the uniform start. The method lives
in clip_min/prefer.py, the phrase pools in clip_min/data/phrases.py; this module reads, runs and reports.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..data.concadia import DataError
from ..files import atomic_write_text, check_output, inside
from ..lora import merge_lora
from ..data.phrases import KINDS, POOL_FILE, Phrase, PoolError, read_pool, toy_pool
from ..prefer import (ClipReward, PreferConfig, align, check_against_pool, estimate_reward, kind_shares, phrase_probabilities,
                      sample)
from ..train.runs import load_model
from ..train.device import resolve_device
from ..data.transfer import TransferTask, encode_task, read_task
from .html import page, table_html
from .session import notes_to_stderr, vision_id

DEFAULTS = PreferConfig()
TOY_TASKS = ("color", "background")  # the toy world's transfer tasks, in the order they are reported


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prefer`` to eval.py's subcommands."""
    p = subparsers.add_parser(
        "prefer", help="which descriptions a model prefers: a phrase policy aligned with its score (EX2 in miniature)",
        description="Align a policy over a phrase pool with each model's score C(images of a concept, description), "
                    "by REINFORCE with a KL penalty to the uniform start, and report the kinds of phrases it prefers.",
    )
    p.add_argument("--weights", help="CLIP weights (default: the toy base)")
    p.add_argument("--run", nargs="+", default=[], metavar="DIR", help="train.py run folders, each a model to read")
    p.add_argument("--base", action="store_true", help="with --run: also read the base model (--weights, else the toy base)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task", nargs="+", metavar="PATH",
                   help="transfer task folders whose classes are the concepts; default: the toy world's color and background")
    p.add_argument("--pool", help=f"phrase-pool file (.tsv: phrase, kind, attribute; see clip_min/data/phrases.py); "
                                  f"default: TASK/{POOL_FILE}, or the toy pool for the toy world")
    p.add_argument("--split", default="test", help="Food-101 and CIFAR-100 split file (ImageNet folders are the split)")
    p.add_argument("--images-per-concept", type=int, default=50, help="images of each class to reward against (default 50)")
    p.add_argument("--slots", type=int, default=DEFAULTS.slots, help=f"phrases per description (default {DEFAULTS.slots})")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"policy-gradient steps (default {DEFAULTS.steps})")
    p.add_argument("--samples", type=int, default=DEFAULTS.samples,
                   help=f"descriptions sampled per concept per step (default {DEFAULTS.samples})")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"Adam's step size (default {DEFAULTS.lr})")
    p.add_argument("--kl-weight", type=float, default=DEFAULTS.kl_weight,
                   help=f"beta, the KL penalty to the uniform start (default {DEFAULTS.kl_weight})")
    p.add_argument("--eval-samples", type=int, default=DEFAULTS.eval_samples,
                   help=f"samples per concept that estimate a policy's reward (default {DEFAULTS.eval_samples})")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--template", default=DEFAULTS.template, help=f"text scored (default {DEFAULTS.template!r})")
    p.add_argument("--top", type=int, default=3, help="top phrases printed per concept (default 3)")
    p.add_argument("--html", help="write the generated descriptions as an HTML page here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=prefer_command)


# ---- concepts and their images -----------------------------------------------------------------


@dataclass
class Concepts:
    names: list[str]  # as they go into the template: "red"
    labels: list[str]  # as they are reported: "color/red"
    tasks: list[TransferTask]  # each task cut to --images-per-concept images per class
    pool: list[Phrase]


def read_concepts(args: argparse.Namespace) -> Concepts:
    """The tasks' classes and the phrase pool, from --task and --pool, or the toy world's."""
    if args.images_per_concept < 1:
        raise ValueError(f"--images-per-concept must be at least 1, got {args.images_per_concept}")
    if args.task:
        folders = [Path(f) for f in args.task]
        # A task folder's own pool must be its own: a symlink out of the folder is not followed.
        pool_path = args.pool or next((path for f in folders if (path := inside(f, POOL_FILE)) is not None
                                       and path.is_file()), None)
        if pool_path is None:
            raise PoolError(f"no --pool given and no {POOL_FILE} in the task folders; write one (see clip_min/data/phrases.py)")
        pool = read_pool(pool_path)
    else:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            world = toy_world()[0]
        folders = [world / "transfer" / name for name in TOY_TASKS]
        pool = read_pool(args.pool) if args.pool else toy_pool()
        print("no --task: reading the toy world's color and background classes", file=sys.stderr)
    tasks = [first_per_class(read_task(folder, args.split), args.images_per_concept) for folder in folders]
    names = [c for task in tasks for c in task.classes]
    labels = [f"{task.name}/{c}" for task in tasks for c in task.classes]
    return Concepts(names, labels, tasks, pool)


def first_per_class(task: TransferTask, n: int) -> TransferTask:
    """The task with only the first n images of each class, in file order."""
    seen: Counter = Counter()
    rows = []
    for row, label in enumerate(task.labels):
        if seen[label] < n:
            seen[label] += 1
            rows.append(row)
    return replace(task, image_paths=[task.image_paths[r] for r in rows] if task.image_paths else [],
                   labels=[task.labels[r] for r in rows],
                   pixels=task.pixels[rows] if task.pixels is not None else None)


def concept_features(loaded, concepts: Concepts, device: str) -> list[torch.Tensor]:
    """Image features (n_k, D) of each concept's images that decoded; a concept with none is an error."""
    features = []
    for task in concepts.tasks:
        with notes_to_stderr():
            encoded, ok = encode_task(loaded.model, task, vision_id(loaded), device)
        if not ok.all():
            print(f"{task.name}: {int((~ok).sum())} of {len(ok)} images did not decode and are left out", file=sys.stderr)
        labels = torch.tensor(task.labels)
        for k, name in enumerate(task.classes):
            rows = (labels == k) & ok
            if not rows.any():
                raise DataError(f"{task.name}: class {name!r} has no image that decodes; drop the class or add images")
            features.append(encoded[rows])
    return features


# ---- one model -----------------------------------------------------------------------------------


def read_model(name: str, loaded, concepts: Concepts, config: PreferConfig, device: str, top: int) -> dict:
    """Align a policy with one model and read it: kind shares, top phrases, reward gained, samples."""
    started = time.perf_counter()
    merge_lora(loaded.model)  # a merged forward skips the LoRA branches: the policy scores thousands of texts
    reward = ClipReward(loaded.model, concepts.names, concept_features(loaded, concepts, device),
                        [p.text for p in concepts.pool], config.template, device)
    kinds = [p.kind for p in concepts.pool]
    K, P = len(concepts.names), len(concepts.pool)
    aligned = align(reward, K, P, config)
    start = torch.zeros_like(aligned.logits)  # the uniform policy every alignment starts from
    generator = torch.Generator().manual_seed(config.seed + 1)
    start_mean, start_se = estimate_reward(reward, start, config.eval_samples, generator)
    aligned_mean, aligned_se = estimate_reward(reward, aligned.logits, config.eval_samples, generator)
    probs = phrase_probabilities(aligned.logits)  # (K, P)
    top_phrases = {label: [(concepts.pool[i].text, float(probs[k, i])) for i in probs[k].argsort(descending=True)[:top].tolist()]
                   for k, label in enumerate(concepts.labels)}
    if reward.cut:
        print(f"{name}: {reward.cut} texts were longer than the model's context and were cut", file=sys.stderr)
    return {
        "model": name,
        "shares": kind_shares(aligned.logits, kinds),
        "attribute_shares": attribute_shares(aligned.logits, concepts.pool),
        "reward_start": float(start_mean.mean()),
        "reward_aligned": float(aligned_mean.mean()),
        # concepts are independent samples, so the standard error of the mean over K concepts
        "reward_gained_se": float(((start_se**2 + aligned_se**2).sum()).sqrt() / K),
        "reward_gained": float((aligned_mean - start_mean).mean()),
        "top_phrases": top_phrases,
        "descriptions": generated(reward, start, aligned.logits, concepts, config),
        "seconds": time.perf_counter() - started,
    }


def attribute_shares(logits: torch.Tensor, pool: list[Phrase]) -> dict[str, float]:
    """Share of each (kind, attribute) among the policy's phrases, keyed "kind/attribute"."""
    return kind_shares(logits, [f"{p.kind}/{p.attribute}" for p in pool])


def generated(reward: ClipReward, start: torch.Tensor, aligned: torch.Tensor, concepts: Concepts,
              config: PreferConfig, n: int = 8) -> dict[str, dict[str, list]]:
    """Per concept, n descriptions of each policy with their rewards: the aligned policy's most frequent."""
    generator = torch.Generator().manual_seed(config.seed + 2)
    out = {}
    for name, logits, frequent in (("start", start, False), ("aligned", aligned, True)):
        actions = sample(logits, config.eval_samples, generator)  # (K, N, S)
        rewards = reward(actions)  # (K, N)
        for k, label in enumerate(concepts.labels):
            counts = Counter(tuple(picks) for picks in actions[k].tolist())
            rows = {tuple(picks): float(r) for picks, r in zip(actions[k].tolist(), rewards[k].tolist())}
            order = [picks for picks, _ in counts.most_common()] if frequent else list(rows)
            out.setdefault(label, {})[name] = [
                {"text": reward.text(k, list(picks)), "phrases": list(dict.fromkeys(picks)), "reward": rows[picks],
                 "share": counts[picks] / config.eval_samples}
                for picks in order[:n]
            ]
    return out


# ---- the command ---------------------------------------------------------------------------------


def prefer_command(args: argparse.Namespace) -> int:
    config = PreferConfig(slots=args.slots, steps=args.steps, samples=args.samples, lr=args.lr, kl_weight=args.kl_weight,
                          eval_samples=args.eval_samples, seed=args.seed, template=args.template)
    if args.weights is not None and args.run:
        raise ValueError("give --weights or --run, not both: a run folder names its own base weights (add --base for the base)")
    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    if args.html:
        check_output(args.html, "--html", [("--weights", args.weights), ("--pool", args.pool),
                                           *(("--run", run) for run in args.run),
                                           *(("--task", task) for task in args.task or [])], holds=False)
    device = resolve_device(args.device)
    concepts = read_concepts(args)
    check_against_pool(config, len(concepts.names), len(concepts.pool))
    models = ([("base", None)] if args.base or not args.run else []) + [(run, run) for run in args.run]
    results = []
    for name, run in models:
        with notes_to_stderr():
            loaded = load_model(args.weights if run is None else None, run, device)
        results.append(read_model(name, loaded, concepts, config, device, args.top))
    start_shares = kind_shares(torch.zeros(1, 1, len(concepts.pool)), [p.kind for p in concepts.pool])
    if args.json:
        print(json.dumps({"config": asdict(config), "concepts": concepts.labels,
                          "start_shares": start_shares, "models": results}, indent=2))
    else:
        print(format_report(results, start_shares, concepts, config))
    if args.html:
        atomic_write_text(args.html, html_page(results, concepts, start_shares, config))
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def format_report(results: list[dict], start_shares: dict[str, float], concepts: Concepts, config: PreferConfig) -> str:
    """Per model its top phrases per concept, then one table with every model side by side."""
    lines = [f"{len(concepts.labels)} concepts, {len(concepts.pool)} phrases, {config.slots} per description; "
             f"{config.steps} steps of {config.samples} samples per concept, KL weight {config.kl_weight}"]
    for r in results:
        lines.append(f"\n{r['model']}: top phrases of the aligned policy (share of slots), {r['seconds']:.0f} s")
        width = max(len(label) for label in r["top_phrases"])
        for label, top in r["top_phrases"].items():
            lines.append(f"  {label:<{width}}  " + "; ".join(f"{text} ({p:.2f})" for text, p in top))
    return "\n".join(lines + ["", summary_table(results, start_shares), summary_note(config)])


def summary_table(results: list[dict], start_shares: dict[str, float]) -> str:
    """Every model side by side, in markdown: the share of each kind of phrase, and the reward before and after."""
    header = ["model"] + [f"{kind} %" for kind in KINDS] + ["reward start", "reward aligned", "gained"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    rows = [["uniform start"] + [f"{100 * start_shares.get(kind, 0.0):.1f}" for kind in KINDS] + ["", "", ""]]
    for r in results:
        rows.append([r["model"]] + [f"{100 * r['shares'].get(kind, 0.0):.1f}" for kind in KINDS]
                    + [f"{r['reward_start']:.2f}", f"{r['reward_aligned']:.2f}",
                       f"{r['reward_gained']:+.2f} ± {1.96 * r['reward_gained_se']:.2f}"])
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary_note(config: PreferConfig) -> str:
    return ("(shares: percent of the aligned policy's phrases, over all concepts; reward: mean C over "
            f"concepts, from {config.eval_samples} samples per concept and policy; ± a 95% interval)")


KIND_COLOURS = {"visual": "#b7e4c7", "non-visual": "#ffd6a5", "spurious": "#ffadad"}


def html_page(results: list[dict], concepts: Concepts, start_shares: dict[str, float], config: PreferConfig) -> str:
    """A standalone page: the summary table the terminal prints, then per model and concept, descriptions of the
    start and the aligned policy, phrases coloured by kind."""
    def phrase(i: int) -> str:
        p = concepts.pool[i]
        return (f"<span style='background:{KIND_COLOURS[p.kind]}' title='{html.escape(p.kind)}: "
                f"{html.escape(p.attribute)}'>{html.escape(p.text)}</span>")

    legend = " ".join(f"<span style='background:{colour}'>{kind}</span>" for kind, colour in KIND_COLOURS.items())
    parts = ["<h2>Summary: the kinds of phrases each aligned policy writes</h2>",
             table_html(summary_table(results, start_shares)), f"<p>{html.escape(summary_note(config))}</p>",
             f"<p>Phrases by kind: {legend}. C is the mean score against the concept's images; "
             "share is how often the policy wrote the description in its samples.</p>"]
    for r in results:
        parts.append(f"<h2>{html.escape(r['model'])}</h2>")
        for label, policies in r["descriptions"].items():
            parts.append(f"<h3>{html.escape(label)}</h3><table><tr><th>policy</th><th>description</th>"
                         "<th>C</th><th>share</th></tr>")
            for policy, rows in policies.items():
                for row in rows:
                    text = ", ".join(phrase(i) for i in row["phrases"])
                    parts.append(f"<tr><td>{policy}</td><td>{html.escape(row['text'])}<br>{text}</td>"
                                 f"<td>{row['reward']:.2f}</td><td>{row['share']:.2f}</td></tr>")
            parts.append("</table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}span{padding:0.1em 0.3em;border-radius:0.2em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left}")
    return page("Which descriptions does each model prefer?", style, parts)
