"""Figures 3 and 4, and one run's curves, drawn with PIL alone.

Figure 3 has a panel for the Concadia validation accuracy and one per transfer task over the
training steps; Figure 4, as the paper draws it, the transfer score over the Concadia accuracy,
each run's evaluations joined in step order. A line per run (seed), coloured by setting, with a
dot at the step Appendix C selects (clip_min/report/selection.py). ``figure_run`` draws the
curves of a single run, which train.py leaves in the run folder as curves.png.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_write
from .selection import RunLog, setting_label, setting_order

PALETTE = {
    ("behavioral", "full"): (31, 119, 180),
    ("behavioral", "lora"): (255, 127, 14),
    ("iit-das", "full"): (44, 160, 44),
    ("iit-das", "lora"): (214, 39, 40),
    ("joint", "full"): (148, 103, 189),
    ("joint", "lora"): (140, 86, 75),
}
OTHER_COLOURS = ((227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _limits(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        spread = max(abs(high) * 0.05, 0.01)
        return low - spread, high + spread
    margin = (high - low) * pad
    return low - margin, high + margin


class Panel:
    """A plot area on an image: data coordinates to pixels, a frame with ticks, lines and dots."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xlim, ylim,
                 title: str, xlabel: str, ylabel: str):
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim
        left, top, right, bottom = box
        font, small = _font(14), _font(12)
        for x in nice_ticks(*xlim):
            px, _ = self.xy(x, ylim[0])
            draw.line([(px, bottom), (px, bottom + 4)], fill=(0, 0, 0))
            draw.line([(px, top + 1), (px, bottom - 1)], fill=(235, 235, 235))
            draw.text((px, bottom + 6), f"{x:g}", fill=(0, 0, 0), font=small, anchor="mt")
        for y in nice_ticks(*ylim):
            _, py = self.xy(xlim[0], y)
            draw.line([(left - 4, py), (left, py)], fill=(0, 0, 0))
            draw.line([(left + 1, py), (right - 1, py)], fill=(235, 235, 235))
            draw.text((left - 6, py), f"{y:g}", fill=(0, 0, 0), font=small, anchor="rm")
        draw.rectangle(box, outline=(0, 0, 0))  # after the grid lines, so they stay inside
        draw.text(((left + right) / 2, top - 26), title, fill=(0, 0, 0), font=font, anchor="mb")
        draw.text((left, top - 8), ylabel, fill=(60, 60, 60), font=small, anchor="lb")
        draw.text(((left + right) / 2, bottom + 24), xlabel, fill=(60, 60, 60), font=small, anchor="mt")

    def xy(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    def line(self, xs: list[float], ys: list[float], colour, width: int = 2) -> None:
        points = [self.xy(x, y) for x, y in zip(xs, ys)]
        if len(points) > 1:
            self.draw.line(points, fill=colour, width=width, joint="curve")

    def dot(self, x: float, y: float, colour, radius: int = 5) -> None:
        px, py = self.xy(x, y)
        self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour, outline=(255, 255, 255))

    def ring(self, x: float, y: float, colour, radius: int = 6) -> None:
        px, py = self.xy(x, y)
        self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=(255, 255, 255), outline=colour,
                          width=2)

    def arrowhead(self, start: tuple[float, float], end: tuple[float, float], colour, size: int = 7) -> None:
        """A small triangle halfway along the segment from ``start`` to ``end`` (data coordinates), pointing to ``end``."""
        (x0, y0), (x1, y1) = self.xy(*start), self.xy(*end)
        length = math.hypot(x1 - x0, y1 - y0)
        if length < 3 * size:  # too short to carry one legibly
            return
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        tip_x, tip_y = (x0 + x1) / 2 + ux * size / 2, (y0 + y1) / 2 + uy * size / 2
        back_x, back_y = tip_x - ux * size * 1.6, tip_y - uy * size * 1.6
        self.draw.polygon([(tip_x, tip_y), (back_x - uy * size, back_y + ux * size), (back_x + uy * size, back_y - ux * size)],
                          fill=colour)

    def step_line(self, x: float, label: str) -> None:
        """A vertical grey line at step ``x``, labelled at its top."""
        left, top, right, bottom = self.box
        px, _ = self.xy(x, self.ylim[0])
        self.draw.line([(px, top + 1), (px, bottom - 1)], fill=(150, 150, 150), width=1)
        anchor = "rt" if px > (left + right) / 2 else "lt"
        self.draw.text((px - 4 if anchor == "rt" else px + 4, top + 4), label, fill=(90, 90, 90), font=_font(12),
                       anchor=anchor)


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    font = _font(13)
    for i, (label, colour) in enumerate(entries):
        top = y + 22 * i
        draw.rectangle([x, top, x + 14, top + 14], fill=colour)
        draw.text((x + 22, top + 7), label, fill=(0, 0, 0), font=font, anchor="lm")


def setting_colours(runs: list[RunLog]) -> dict[tuple[str, str], tuple[int, int, int]]:
    settings = sorted({run.setting for run in runs}, key=setting_order)
    others = iter(OTHER_COLOURS * len(settings))
    return {s: PALETTE.get(s) or next(others) for s in settings}


def _over_training(runs: list[RunLog], path: str | Path, panels: list[tuple[str, str, object]], title: str) -> Path:
    """One panel per (title, y label, value of a StepScore), a line per run over the steps, its selected step dotted."""
    colours = setting_colours(runs)
    columns = min(len(panels), 3)
    grid_rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (70 + 470 * columns + 230, 40 + 440 * grid_rows), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 10), title, fill=(0, 0, 0), font=_font(15))
    steps = [0] + [s.step for run in runs for s in run.steps]
    xlim = (0, max(steps) * 1.02 or 1)
    for index, (panel_title, ylabel, value) in enumerate(panels):
        series = [[(s.step, value(s)) for s in [run.base] + run.steps if value(s) is not None] for run in runs]
        ys = [100 * y for points in series for _, y in points] or [0.0, 100.0]
        left, top = 70 + (index % columns) * 470, 100 + (index // columns) * 440
        panel = Panel(draw, (left, top, left + 400, top + 300), xlim, _limits(ys), panel_title, "training step", ylabel)
        for run, points in zip(runs, series):
            panel.line([x for x, _ in points], [100 * y for _, y in points], colours[run.setting])
            best = run.best
            if value(best) is not None:
                panel.dot(best.step, 100 * value(best), colours[run.setting], radius=5)
    legend_x = 70 + 470 * columns
    _legend(draw, legend_x, 100, [(setting_label(s), c) for s, c in colours.items()])
    draw.text((legend_x, 100 + 22 * len(colours) + 10), "a line per run (seed)\ndot: its selected step",
              fill=(60, 60, 60), font=_font(12))
    return _save(image, path)


def figure_training(runs: list[RunLog], path: str | Path) -> Path:
    """Figure 3: Concadia validation accuracy and each transfer task's macro-F1 over training, a line per run."""
    tasks = list(dict.fromkeys(task for run in runs for s in run.steps for task in s.f1))
    panels = [("Concadia Desc>Cap (validation)", "accuracy (%)", lambda s: s.accuracy)]
    panels += [(task, "macro-F1 (%)", lambda s, task=task: s.f1.get(task)) for task in tasks]
    return _over_training(runs, path, panels, "Figure 3: accuracy over training")


SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                  (227, 119, 194), (127, 127, 127))


def figure_run(run: RunLog, path: str | Path) -> Path:
    """One run's curves: validation and test preference accuracy, and each transfer task's macro-F1, over the
    steps from the base (step 0), with the step Appendix C selects marked."""
    evaluations = [run.base] + run.steps
    tasks = list(dict.fromkeys(task for s in evaluations for task in s.f1))
    colours = iter(SERIES_COLOURS * 2)
    panels = [("Concadia Desc>Cap accuracy", "accuracy (%)",
               [("validation", next(colours), lambda s: s.accuracy), ("test", next(colours), lambda s: s.test_accuracy)])]
    panels += [(f"{task}: zero-shot macro-F1", "macro-F1 (%)", [(task, next(colours), lambda s, t=task: s.f1.get(t))])
               for task in tasks]
    columns = min(len(panels), 3)
    grid_rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (70 + 470 * columns, 100 + 470 * (grid_rows - 1) + 380), "white")
    draw = ImageDraw.Draw(image)
    best = run.best
    title = f"{setting_label(run.setting)}, seed {run.seed}, over training: "
    draw.text((20, 12), title + fitted(str(run.folder), image.width - 40 - draw.textlength(title, font=_font(15)),
                                       _font(15)), fill=(0, 0, 0), font=_font(15))
    draw.text((20, 36), f"circle: the base (step 0); dot and grey line: step {best.step}, the one Appendix C selects",
              fill=(60, 60, 60), font=_font(13))
    xlim = (0, max(s.step for s in evaluations) * 1.02 or 1)
    for index, (title, ylabel, series) in enumerate(panels):
        points = [[(s.step, 100 * value(s)) for s in evaluations if value(s) is not None] for _, _, value in series]
        ys = [y for line in points for _, y in line] or [0.0, 100.0]
        left, top = 70 + (index % columns) * 470, 100 + (index // columns) * 470
        panel = Panel(draw, (left, top, left + 400, top + 300), xlim, _limits(ys), title, "training step", ylabel)
        panel.step_line(best.step, f"selected: step {best.step}")
        for (name, colour, value), line in zip(series, points):
            panel.line([x for x, _ in line], [y for _, y in line], colour)
            if line and line[0][0] == 0:
                panel.ring(0, line[0][1], colour)
            if value(best) is not None:
                panel.dot(best.step, 100 * value(best), colour)
        _legend_row(draw, left, top + 350, [(name, colour) for name, colour, _ in series])
    return _save(image, path)


def fitted(text: str, width: float, font) -> str:
    """``text``, its start cut to "..." if it is wider than ``width`` pixels: a long path keeps its end."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while len(text) > 4 and probe.textlength(text, font=font) > width:
        text = "..." + text[4:]
    return text


def _legend_row(draw: ImageDraw.ImageDraw, x: int, y: int, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    font = _font(13)
    for label, colour in entries:
        draw.rectangle([x, y, x + 14, y + 14], fill=colour)
        draw.text((x + 20, y + 7), label, fill=(0, 0, 0), font=font, anchor="lm")
        x += 20 + int(draw.textlength(label, font=font)) + 24


def tradeoff_curves(runs: list[RunLog]) -> list[list[tuple[float, float]]]:
    """Figure 4's curves: per run, (Concadia validation accuracy, transfer score) of each evaluation, base first."""
    return [[(s.accuracy, s.transfer_score) for s in [run.base] + run.steps if s.transfer_score is not None]
            for run in runs]


FIGURE4_PANEL = (80, 90, 680, 530)  # Figure 4's plot area, left, top, right, bottom: most of its canvas


def figure_tradeoff(runs: list[RunLog], path: str | Path) -> Path:
    """Figure 4: the transfer score (y) over the Concadia accuracy (x), a curve per run in step order.

    Each curve starts at a ring (the base, step 0), carries arrowheads in the direction of training,
    and has a dot at the step Appendix C selects.
    """
    colours = setting_colours(runs)
    curves = tradeoff_curves(runs)
    left, top, right, bottom = FIGURE4_PANEL
    image = Image.new("RGB", (right + 270, bottom + 60), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 14), "Figure 4: transfer score over Concadia accuracy, a curve per run", fill=(0, 0, 0), font=_font(15))
    xs = [100 * x for points in curves for x, _ in points] or [0.0, 100.0]
    ys = [100 * y for points in curves for _, y in points] or [0.0, 100.0]
    panel = Panel(draw, FIGURE4_PANEL, _limits(xs), _limits(ys), "",
                  "Concadia Desc>Cap accuracy (validation, %)", "transfer score (%)")
    for run, points in zip(runs, curves):
        colour = colours[run.setting]
        xy = [(100 * x, 100 * y) for x, y in points]
        panel.line([x for x, _ in xy], [y for _, y in xy], colour)
        for start, end in zip(xy, xy[1:]):
            panel.arrowhead(start, end, colour)
        if xy and run.base.transfer_score is not None:
            panel.ring(*xy[0], colour)
        best = run.best
        if best.transfer_score is not None:
            panel.dot(100 * best.accuracy, 100 * best.transfer_score, colour, radius=6)
    legend_x = right + 30
    _legend(draw, legend_x, top, [(setting_label(s), c) for s, c in colours.items()])
    key_top = top + 22 * len(colours) + 20
    grey = (90, 90, 90)
    draw.ellipse([legend_x + 1, key_top + 1, legend_x + 13, key_top + 13], fill=(255, 255, 255), outline=grey, width=2)
    draw.polygon([(legend_x + 1, key_top + 24), (legend_x + 13, key_top + 30), (legend_x + 1, key_top + 36)], fill=grey)
    draw.ellipse([legend_x + 1, key_top + 45, legend_x + 13, key_top + 57], fill=grey)
    for row, text in enumerate(("start: the base (step 0)", "the direction of training", "the selected step (App. C)")):
        draw.text((legend_x + 22, key_top + 7 + 22 * row), text, fill=(0, 0, 0), font=_font(13), anchor="lm")
    draw.text((legend_x, key_top + 80), "a curve per run (seed),\nits evaluations in step order",
              fill=(60, 60, 60), font=_font(12))
    return _save(image, path)


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path
