"""The Python API: what a notebook or a Python prompt needs, documented with examples in docs/api.md.

    import clip_min
    base = clip_min.load_base()                       # the toy world's base CLIP (or an OpenAI .pt, a HF folder)
    print(clip_min.preference(base))                  # Desc>Cap on the toy world's test split: 0.476
    clip_min.fit(objective="behavioral", lora_rank=64, out="runs/behavioral")   # what train.py does
    run = clip_min.load_run("runs/behavioral")        # at the step Appendix C selected (step="last": the last)
    clip_min.score(run, "photo.jpg", ["A red circle on a grey background.", "The Varga medallion, 1923."])

Each function takes its input as the scripts take their flags and checks it where it enters; a
mistake a user can fix raises :class:`clip_min.UserError` with the one-line message the scripts
print. The work is done by the same code as train.py and eval.py: this module only joins it up.
"""

from __future__ import annotations

import html
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from PIL import Image

from .errors import UserError, as_user_errors
from .files import read_whole
from .images import load_image, preprocess
from .model import CLIP
from .train.config import TrainConfig

# The models the API hands out and takes are clip_min.train.runs.LoadedRun: .model, .rotation, .step,
# .config, .folder, and the identity of the weights, under which image features are cached.


def toy_world() -> Path:
    """The toy world's folder (concadia/, transfer/, norms/), generated on first use in the cache."""
    from .train.pipeline import toy_world as make

    with as_user_errors():
        return make()[0]


def load_base(weights: str | os.PathLike | None = None, device: str = "auto"):
    """A base CLIP: OpenAI's ``.pt``, a Hugging Face folder, or with no ``weights`` the toy world's base.

    Returns a LoadedRun: ``.model`` is the CLIP, in eval mode.
    """
    from .train.device import resolve_device
    from .train.runs import load_model

    with as_user_errors():
        return load_model(None if weights is None else os.fspath(weights), None, resolve_device(device))


def load_run(folder: str | os.PathLike, step: str = "selected", device: str = "auto"):
    """A train.py run folder's model: at the step Appendix C selected (``step="last"``: its last), with its rotation.

    Returns a LoadedRun: ``.model`` (LoRA attached), ``.rotation`` (IIT-DAS and joint runs), ``.step``.
    """
    from .train.device import resolve_device
    from .train.runs import load_run as load

    with as_user_errors():
        return load(os.fspath(folder), resolve_device(device), step)


def _model(loaded) -> CLIP:
    from .train.runs import LoadedRun

    if not isinstance(loaded, LoadedRun):
        raise UserError(f"expected a model from clip_min.load_base or clip_min.load_run, got {type(loaded).__name__}")
    return loaded.model.eval()


def _device(model: CLIP) -> str:
    return str(next(model.parameters()).device)


def preference(loaded, data: str | os.PathLike | None = None, split: str = "test") -> float:
    """Desc>Cap: the share of a Concadia split's images whose description outscores their caption, as train.py measures it.

    ``data`` is a Concadia folder; by default the run's, else the toy world's.
    """
    from .report.session import notes_to_stderr, vision_id
    from .train.evaluation import load_split, split_accuracy

    model = _model(loaded)
    with as_user_errors():
        config = loaded.config
        folder, images = (data, None) if data is not None else (config.get("data"), config.get("images"))
        folder = Path(folder) if folder else toy_world() / "concadia"
        with notes_to_stderr():
            chosen = load_split(model, folder, images, split, vision_id(loaded), _device(model), nullcontext)
        return split_accuracy(model, chosen, _device(model), nullcontext)


def _image_list(images) -> list[tuple[str, Image.Image]]:
    """(label, decoded image) for a path, a PIL image, or a list of them; a label is the path as given, or "image N"."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    out = []
    for number, image in enumerate(images, start=1):
        if isinstance(image, Image.Image):
            out.append((f"image {number}", image))
        elif isinstance(image, (str, os.PathLike)):
            out.append((os.fspath(image), load_image(image)))
        else:
            raise ValueError(f"images: {type(image).__name__} is neither a path nor a PIL image")
    if not out:
        raise ValueError("images: give at least one image (a path or a PIL image)")
    return out


def _text_list(texts) -> list[str]:
    from .tokenizer import EMPTY_TEXT, empty_once_cleaned

    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("texts: give one text or a list of texts, each a string")
    empty = [text for text in texts if empty_once_cleaned(text)]
    if empty:
        raise ValueError(f"texts: {empty[0]!r} is empty once cleaned ({EMPTY_TEXT}); give a text with words")
    return texts


@torch.no_grad()
def _image_features(model: CLIP, images: list[Image.Image]) -> torch.Tensor:
    pixels = torch.stack([preprocess(image, model.config.image_resolution) for image in images])  # (I, 3, R, R)
    return model.encode_image(pixels.to(_device(model))).float().cpu()  # (I, embed_dim)


@dataclass
class Scores:
    """C = e^t cos(im, text) and CLIPScore of every image (rows) with every text (columns)."""

    images: list[str]  # each image's label: its path as given, or "image N"
    texts: list[str]
    c: torch.Tensor  # (images, texts)
    clipscore: torch.Tensor  # (images, texts)

    def __repr__(self) -> str:
        from .report.score import format_scores

        return format_scores([(float(self.clipscore[i, j]), float(self.c[i, j]), image, text)
                              for i, image in enumerate(self.images) for j, text in enumerate(self.texts)])


def score(loaded, images, texts) -> Scores:
    """Score every image (a path, a PIL image, or a list of them) with every text (one or a list): C and CLIPScore."""
    from .report.score import pair_scores

    model = _model(loaded)
    with as_user_errors():
        labelled, texts = _image_list(images), _text_list(texts)
        features = _image_features(model, [image for _, image in labelled])  # (I, D)
        n_images, n_texts = len(labelled), len(texts)
        # One aligned row per (image, text) pair, image-major: (I * T, D) and I * T texts.
        c, clip_score, cut = pair_scores(model, features.repeat_interleave(n_texts, dim=0), texts * n_images,
                                         _device(model), nullcontext)
    if cut:
        print(f"{cut // n_images} of {n_texts} texts are longer than {model.config.context_length} tokens and were cut",
              file=sys.stderr)
    return Scores([label for label, _ in labelled], texts, c.view(n_images, n_texts), clip_score.view(n_images, n_texts))


@dataclass
class Attributions:
    """Integrated-gradient word attributions (Eq. 6) of texts scored with one image, and through the DAS site (Eq. 7)."""

    image: str  # the image's label
    picture: Path | None  # the image file, shown beside the words on the page
    labels: list[str]  # a label per text
    texts: list[str]
    rows: list[list[tuple[str, list[tuple[str, float]]]]]  # per text: (attribution name, [(word, value)]) per kind
    c: list[float]  # C(im, text) per text
    baseline_c: list[float]  # C(im, x') per text: the attributions share out c - baseline_c

    @property
    def scale(self) -> float:
        """The one colour scale of every text shown: the largest |attribution|."""
        from .report.html import page_scale

        return page_scale([words for rows in self.rows for _, words in rows])

    def __repr__(self) -> str:
        from .report.html import ansi_line

        lines = []
        for label, rows, c, c0 in zip(self.labels, self.rows, self.c, self.baseline_c):
            lines += [f"{name:>11} | {ansi_line(words, color=False)}" for name, words in rows]
            lines.append(f"{'':>11} | {label}: C(im, text) = {c:.3f}, C(im, x') = {c0:.3f}")
        return "\n".join(lines)

    def html(self) -> str:
        """The page eval.py attribute --html writes: Figure 2's colours on one scale, each row labelled."""
        from .report.html import attribution_page, text_section

        scale = self.scale
        sections = [text_section(self.picture, label, c, rows, scale)
                    for label, rows, c in zip(self.labels, self.rows, self.c)]
        return attribution_page("Word attributions (integrated gradients)", sections, scale)

    def _repr_html_(self) -> str:
        # Jupyter shows this; the page keeps its own styles inside a frame.
        return f'<iframe srcdoc="{html.escape(self.html())}" style="width:100%;height:{140 + 110 * len(self.texts)}px;border:0"></iframe>'

    def save(self, path: str | os.PathLike) -> Path:
        from .files import atomic_write_text

        with as_user_errors():
            atomic_write_text(path, self.html())
        return Path(path)


def attribute(loaded, image, texts, mediated: bool = False, steps: int | None = None) -> Attributions:
    """Attribute C(image, text) to each text's words by integrated gradients (Eq. 6); ``mediated``: also through
    the run's DAS site only (Eq. 7). ``texts``: one text, a list, or {label: text} ("description": ..., ...)."""
    from .attribution import DEFAULT_STEPS, integrated_gradients, mediated_integrated_gradients, word_attributions
    from .tokenizer import tokenize

    model = _model(loaded)
    with as_user_errors():
        labels = list(texts) if isinstance(texts, dict) else None
        texts = _text_list(list(texts.values()) if isinstance(texts, dict) else texts)
        labels = labels or [f"text {n}" for n in range(1, len(texts) + 1)]
        if isinstance(image, (list, tuple)):
            raise ValueError("attribute scores its texts with one image: give one path or PIL image")
        ((label, decoded),) = _image_list(image)
        steps = DEFAULT_STEPS if steps is None else steps  # integrated_gradients refuses fewer than 2
        site = loaded.das_site() if mediated else None
        if mediated and site is None:
            raise ValueError("mediated=True needs the DAS rotation of an IIT-DAS or joint run: load one with clip_min.load_run")
        features = _image_features(model, [decoded]).to(_device(model))  # (1, D)
        rows, c, c0 = [], [], []
        for text in texts:
            tokens = tokenize(text, model.config.context_length, truncate=True).to(_device(model))
            result = integrated_gradients(model, features, tokens, steps)
            kinds = [("IG", word_attributions(tokens[0].cpu(), result.attributions[0]))]
            if site is not None:
                through = mediated_integrated_gradients(model, features, tokens, *site, steps=steps)
                kinds.append(("mediated IG", word_attributions(tokens[0].cpu(), through.attributions[0])))
            rows.append(kinds)
            c.append(float(result.score[0]))
            c0.append(float(result.baseline_score[0]))
    picture = Path(image) if isinstance(image, (str, os.PathLike)) else None
    return Attributions(label, picture, labels, texts, rows, c, c0)


def fit(**options) -> dict:
    """Train as train.py does: each keyword is one of its flags (``lora_rank=64`` for ``--lora-rank 64``).

    Runs the same pipeline as ``python train.py`` (clip_min.train.pipeline.run): the toy world when
    neither ``weights`` nor ``data`` is given, the run folder ``out`` (default runs/latest, relative
    to the working directory) with its curves.png; returns the run's summary (summary.json).
    """
    from .cli.train import config_from_flags
    from .train.pipeline import run
    from .train.runs import field_problem

    names = {f.name for f in fields(TrainConfig)}
    with as_user_errors():
        for name in options:
            if name not in names:
                raise ValueError(f"fit: no option {name!r} (train.py has no --{name.replace('_', '-')}); "
                                 "the options are train.py's flags, python train.py --help lists them")
        options = {name: os.fspath(value) if isinstance(value, os.PathLike) else value for name, value in options.items()}
        if "transfer" in options:
            options["transfer"] = [os.fspath(folder) for folder in options["transfer"] or ()]
        for name, value in options.items():
            problem = field_problem(name, value)
            if problem:
                raise ValueError(f"fit: {name}={value!r} is not an option value: {problem}")
        return run(config_from_flags(options))


MAX_PICTURE_BYTES = 64 << 20  # the largest PNG shown; clip_min's figures are well under 1 MB


class Picture:
    """A PNG file that Jupyter shows inline (it reads ``_repr_png_``); elsewhere it prints as its path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _repr_png_(self) -> bytes:
        return read_whole(self.path, MAX_PICTURE_BYTES, "picture")

    def __repr__(self) -> str:
        return f"Picture({str(self.path)!r})"


def curves(folder: str | os.PathLike) -> Picture:
    """The curves train.py drew for a run: validation and test accuracy and each task's F1, the selected step marked."""
    path = Path(folder) / "curves.png"
    if not path.is_file():
        raise UserError(f"{path} is missing: a fine-tuning run draws it when it finishes; is {folder} a train.py run folder?")
    return Picture(path)


def figure4(folders: list[str | os.PathLike], path: str | os.PathLike = "figure4.png") -> Picture:
    """Figure 4 of the runs in ``folders`` (the transfer score over the Concadia accuracy, a curve per run), at ``path``."""
    from .report.figures import figure_tradeoff
    from .report.selection import read_run

    with as_user_errors():
        return Picture(figure_tradeoff([read_run(os.fspath(folder)) for folder in folders], path))
