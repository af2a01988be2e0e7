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


def page(title: str, style: str, parts: list[str]) -> str:
    """A standalone HTML page: the title as heading, then the parts (HTML fragments), one a line."""
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def attribution_page(title: str, sections: list[str]) -> str:
    """A standalone page of attribution sections (each an HTML fragment), with Figure 2's legend."""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}"
             "span{padding:0.15em 0.25em;border-radius:0.2em}"
             "section{border-top:1px solid #ccc;padding:0.5em 0}"
             "img{float:left;margin-right:1em;width:96px;image-rendering:pixelated}"
             ".label{color:#666;font-size:0.85em;margin-right:0.5em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em}")
    legend = ('<p><span style="background: rgba(0, 170, 0, 0.8)">positive</span> raises C(im, text), '
              '<span style="background: rgba(200, 0, 200, 0.8)">negative</span> lowers it; '
              "the strength is |attribution| over the text's largest.</p>")
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
