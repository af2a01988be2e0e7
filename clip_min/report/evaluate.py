"""``eval.py concadia`` and ``eval.py transfer``: the two numbers Table 1 reports for each model.

    concadia   share of Concadia images whose description outscores their caption (Desc>Cap),
               with a bootstrap 95% interval
    transfer   zero-shot macro-F1 on Food-101, CIFAR-100 and ImageNet (or the toy tasks)

Training logs the same two numbers as it goes (clip_min/train/loop.py); these commands measure
any model, base or fine-tuned, on any split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.concadia import DataError
from ..data.transfer import (AUTHORS_PROMPTS, PROMPT_CHOICES, PROMPTS, class_prompts, class_text_features, encode_task,
                             read_task, zero_shot_f1)
from ..metrics import bootstrap_interval, preference_accuracy
from ..train.evaluation import load_split, split_scores
from .session import add_model_options, notes_to_stderr, open_model, print_json


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``concadia`` and ``transfer`` to eval.py's subcommands."""
    p = subparsers.add_parser("concadia", help="Desc>Cap: share of images whose description outscores their caption")
    add_model_options(p)
    p.add_argument("--data", help="Concadia folder (wiki_split.json, resized/); default: the run's, else the toy world's")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=concadia_command)

    p = subparsers.add_parser("transfer", help="zero-shot macro-F1 on classification tasks")
    add_model_options(p)
    p.add_argument("--task", nargs="+", metavar="PATH",
                   help="task folders: Food-101, CIFAR-100 (python version) or ImageNet val in class folders; "
                        "default: the run's, else the toy world's")
    p.add_argument("--prompt", default="paper", choices=sorted(PROMPT_CHOICES),
                   help="class prompt template (see transfer.PROMPTS; authors: each task's, on its raw class names)")
    p.add_argument("--split", default="test", help="Food-101 and CIFAR-100 split file (ImageNet folders are the split)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=transfer_command)


def concadia_command(args: argparse.Namespace) -> int:
    session = open_model(args)
    data, images = args.data, args.images
    if data is None:
        data = session.loaded.config.get("data")
        images = images or session.loaded.config.get("images")
    if data is None:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            data = toy_world()[0] / "concadia"
        print(f"no --data: measuring on the toy world's Concadia ({data})", file=sys.stderr)
    with notes_to_stderr():
        split = load_split(session.model, Path(data), images, args.split, session.vision_id, session.device, session.autocast)
    c_des, c_cap = split_scores(session.model, split, session.device, session.autocast)
    accuracy = preference_accuracy(c_des=c_des, c_cap=c_cap)
    low, high = bootstrap_interval((c_des > c_cap).float().numpy())
    n = len(split.examples)
    if args.json:
        print_json({"split": args.split, "images": n, "accuracy": accuracy, "ci95": [low, high], "data": str(data)})
    else:
        print(f"Concadia {args.split}: C(im, description) > C(im, caption) for {accuracy:.1%} of {n} images "
              f"(95% bootstrap interval {low:.1%} to {high:.1%})")
    return 0


def task_f1(session, task, prompts: list[str], where: str) -> tuple[float, int, int]:
    """Zero-shot macro-F1 of ``task`` with one prompt per class: (F1, images counted, images that did not decode).

    ``where`` names the task in the error raised when none of its images decodes.
    """
    with notes_to_stderr():
        features, ok = encode_task(session.model, task, session.vision_id, session.device, session.autocast)
    if not ok.any():
        raise DataError(f"{where}: none of its {len(ok)} images could be decoded")
    if not ok.all():
        print(f"{task.name}: {int((~ok).sum())} of {len(ok)} images did not decode and are left out", file=sys.stderr)
    labels = [label for label, good in zip(task.labels, ok.tolist()) if good]
    with session.autocast():
        classes = class_text_features(session.model, prompts, "{}", session.device)
    return zero_shot_f1(features[ok].to(session.device), labels, classes.float()), len(labels), int((~ok).sum())


def transfer_command(args: argparse.Namespace) -> int:
    session = open_model(args)
    folders = args.task or session.loaded.config.get("transfer")
    if not folders:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            folders = toy_world()[1]
        print("no --task: measuring on the toy world's transfer tasks", file=sys.stderr)
    template = PROMPTS.get(args.prompt, "authors: " + ", ".join(f"{k} {v!r}" for k, v in AUTHORS_PROMPTS.items()))
    results = {}
    for folder in folders:
        task = read_task(folder, args.split)
        f1, images, undecodable = task_f1(session, task, class_prompts(task, args.prompt), str(folder))
        results[task.name] = {"macro_f1": f1, "images": images, "classes": len(task.classes),
                              "undecodable": undecodable, "path": str(folder)}
    if args.json:
        print_json({"prompt": template, "tasks": results})
    else:
        for name, r in results.items():
            print(f"{name}: macro-F1 {r['macro_f1']:.1%} on {r['images']} images, {r['classes']} classes (prompt {template!r})")
    return 0
