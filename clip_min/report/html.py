"""What people read: word attributions as coloured terminal lines and HTML (Figure 2), and the HTML pages eval.py writes."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path


def _shade(value: float, scale: float) -> tuple[tuple[int, int, int], float]:
    """Figure 2's colours: green for positive, magenta for negative; strength = |value| / scale in [0, 1]."""
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    return ((0, 170, 0) if value >= 0 else (200, 0, 200)), strength


def page_scale(texts: list[list[tuple[str, float]]]) -> float:
    """The largest |attribution| over every word of every text shown together: their one colour scale.

    With a scale per text, a caption whose words barely move C would look as strong as a description
    whose words carry it; over one scale the colours compare across texts.
    """
    return max((abs(value) for words in texts for _, value in words), default=0.0)


def ansi_line(words: list[tuple[str, float]], color: bool = True, scale: float | None = None) -> str:
    """The words of one text with attribution backgrounds (24-bit ANSI), or with [values] when not ``color``.

    The values are written to three decimals, as the HTML page writes them: a share of C near zero
    reads +0.000 rather than as digits of rounding noise.

    ``scale``: the |attribution| shown at full strength (page_scale of the texts printed together);
    None, the text's own largest.
    """
    if not color:
        return " ".join(f"{word}[{value:+.3f}]" for word, value in words)
    scale = page_scale([words]) if scale is None else scale
    parts = []
    for word, value in words:
        rgb, strength = _shade(value, scale)
        # Blend from white, with black letters, so it reads on light and dark terminals alike.
        r, g, b = (round(255 + strength * (c - 255)) for c in rgb)
        parts.append(f"\x1b[30;48;2;{r};{g};{b}m {word} \x1b[0m")
    return "".join(parts)


def html_words(words: list[tuple[str, float]], scale: float) -> str:
    """One text as Figure 2's coloured words, each with its attribution written under it; full colour at ``scale``."""
    spans = []
    for word, value in words:
        (r, g, b), strength = _shade(value, scale)
        spans.append(f'<span class="w" style="background: rgba({r}, {g}, {b}, {strength:.2f})">{html.escape(word)}'
                     f'<small>{value:+.3f}</small></span>')
    return " ".join(spans)


def text_section(image: str | Path | None, label: str, c: float, rows: list[tuple[str, list[tuple[str, float]]]],
                 scale: float) -> str:
    """One text on an attribution page: the image, "label · C", and a labelled row of words per attribution."""
    lines = "".join(f"<div class='row'><span class='label'>{html.escape(label)}, {html.escape(name)}</span>"
                    f"<span>{html_words(words, scale)}</span></div>" for name, words in rows)
    picture = f"<img src='{image_data_uri(image)}' alt=''>" if image is not None else ""
    return (f"<section>{picture}<div><div class='label'>{html.escape(label)} · C = {c:.3f}</div>{lines}</div>"
            "</section>")


def page(title: str, style: str, parts: list[str]) -> str:
    """A standalone HTML page: the title as heading, then the parts (HTML fragments), one a line."""
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def attribution_page(title: str, sections: list[str], scale: float) -> str:
    """A standalone page of attribution sections (each an HTML fragment), with Figure 2's legend and its one scale."""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "span{padding:0.15em 0.25em;border-radius:0.2em}"
             "span.w{display:inline-block;text-align:center;margin:0.1em 0}"
             "span.w small{display:block;font-size:0.7em;color:#222}"
             "section{border-top:1px solid #ccc;padding:0.5em 0;display:flex;gap:1em;align-items:flex-start}"
             "section img{flex:0 0 96px;width:96px;image-rendering:pixelated}"
             "div.row{display:flex;align-items:baseline;margin:0.3em 0}"
             ".label{color:#666;font-size:0.85em;margin-right:0.5em}"
             ".row>.label{flex:0 0 10em}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:0.2em 0.6em}")
    legend = ('<p><span style="background: rgba(0, 170, 0, 0.8)">positive</span> raises C(im, text), '
              '<span style="background: rgba(200, 0, 200, 0.8)">negative</span> lowers it. One scale for every '
              f"text on the page: full colour is |attribution| = {scale:.3g}, the largest here, so the colours "
              "compare across texts. Under each word, its attribution.</p>")
    return page(title, style, [legend, *sections])


def image_data_uri(path: str | Path, size: int = 192) -> str:
    """A small JPEG of the image, inline, so the page stands alone; opened and scaled to 8 bits as the model's input is."""
    from ..images import load_image, to_rgb

    thumbnail = to_rgb(load_image(path))
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def table_html(table: str) -> str:
    """A markdown table (as the commands print them) as an HTML <table>."""
    lines = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]

    def cells(row: list[str], tag: str) -> str:
        return "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row)

    return "<table><tr>" + cells(head, "th") + "</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</table>"
