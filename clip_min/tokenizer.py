"""Byte-level BPE tokenizer that gives the same ids as OpenAI CLIP's SimpleTokenizer.

The text encoder only understands the ids it was trained on, so every step here (the cleaning,
the word-splitting regex, the byte-to-character table, the merge order) must match OpenAI's
exactly; tests/test_tokenizer.py checks that id for id on over a thousand strings.

The merges file (bpe_simple_vocab_16e6.txt.gz) is not ours to redistribute; it ships inside the
PyPI package openai-clip, which we locate without importing (its __init__ needs torchvision).
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import ftfy
import regex
import torch

from .files import open_whole

SOT = 49406  # <|startoftext|>, first token of every tokenized text
EOT = 49407  # <|endoftext|>, the largest id: the text encoder reads its output at argmax(ids)
CONTEXT_LENGTH = 77  # positions in CLIP's text encoder
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49408 - 2 * 256 - 2  # vocabulary size minus byte pieces minus the two special tokens

# Pre-tokenization: the text is cut into words first and BPE never merges across them. Letters
# group into words, but each digit stands alone, and runs of other symbols group together.
WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)


class VocabNotFoundError(RuntimeError):
    """The BPE merges file is missing or is not CLIP's."""


def default_vocab_path() -> Path:
    """Find bpe_simple_vocab_16e6.txt.gz inside the installed openai-clip package."""
    spec = importlib.util.find_spec("clip")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise VocabNotFoundError(
        f"CLIP's {VOCAB_FILE} was not found: run `pip install openai-clip` or pass vocab_path"
    )


def bytes_to_unicode() -> dict[int, str]:
    """Give each of the 256 byte values a visible character to stand for it.

    BPE works on strings and the merges file is text, so bytes need printable stand-ins. Bytes
    that are already printable Latin-1 characters stand for themselves; the other 68 (controls,
    space, no-break space, soft hyphen) become chr(256 + k) in byte order. The order of this dict
    fixes token ids 0..255, so it must be exactly this.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """Repair mojibake, undo (double) HTML escaping, collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = regex.sub(r"\s+", " ", text).strip()
    return text.lower()


# What clean_text leaves nothing of, as an error message says it.
EMPTY_TEXT = "nothing but spaces, HTML entities such as &nbsp; or control characters"


def empty_once_cleaned(text: str) -> bool:
    """Whether nothing is left of a text once :func:`clean_text` has cleaned it (spaces, "&nbsp;", control characters).

    Every reader of a text asks this one question: such a text would reach the model as [BOS, EOS].
    """
    # Cleaning removes a letter only as part of an HTML entity ("&nbsp;"); this spares most texts ftfy.
    if "&" not in text and any(c.isalnum() for c in text):
        return False
    return not clean_text(text)


class Tokenizer:
    """Text <-> CLIP token ids; load once (see get_tokenizer), since reading the merges takes ~0.1 s."""

    def __init__(self, vocab_path: str | Path | None = None):
        path = default_vocab_path() if vocab_path is None else Path(vocab_path)
        if not path.is_file():
            raise VocabNotFoundError(f"vocabulary file {path} does not exist")
        # OpenAI's file is 1.4 MB gzipped, 1.7 MB unpacked; reading at most 16 MiB of either stops
        # a FIFO, a device or a small file that unpacks to gigabytes.
        with open_whole(path, 16 << 20, "BPE vocabulary") as raw, gzip.GzipFile(fileobj=raw) as f:
            lines = f.read(16 << 20).decode("utf-8", errors="replace").split("\n")
        # Line 0 is a version header; OpenAI uses exactly the next N_MERGES lines.
        merges = [tuple(line.split()) for line in lines[1 : 1 + N_MERGES]]
        if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
            raise VocabNotFoundError(f"{path} does not hold CLIP's {N_MERGES} BPE merges")

        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: b for b, char in self.byte_encoder.items()}
        byte_pieces = list(self.byte_encoder.values())
        # Id order: 256 bytes, the same 256 ending a word, one piece per merge, the two specials.
        vocab = (
            byte_pieces
            + [piece + "</w>" for piece in byte_pieces]
            + ["".join(pair) for pair in merges]
            + ["<|startoftext|>", "<|endoftext|>"]
        )
        self.encoder = {piece: i for i, piece in enumerate(vocab)}
        self.decoder = vocab
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        # Memo of word -> pieces; the special tokens are pre-seeded so BPE never splits them.
        self._bpe_cache: dict[str, list[str]] = {s: [s] for s in ("<|startoftext|>", "<|endoftext|>")}

    def bpe(self, word: str) -> list[str]:
        """Split one word (written in byte stand-in characters) into vocabulary pieces."""
        if word in self._bpe_cache:
            return self._bpe_cache[word]
        # Start from single characters. The last one carries the end-of-word marker, so "cat" as
        # a whole word and the "cat" at the start of "cats" end up as different pieces.
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            # Merges were learned in order, most frequent pair first; replay them in that order:
            # of the adjacent pairs present now, apply the one learned earliest (lowest rank).
            best = min(zip(parts, parts[1:]), key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break  # no adjacent pair was ever merged in training: the word is final
            # Fuse every occurrence of that pair, scanning left to right, so "a a a" -> "aa a".
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._bpe_cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without the start and end tokens."""
        ids = []
        for word in WORD_PATTERN.findall(clean_text(text)):
            chars = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(chars))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids: the cleaned, lowercased text for ordinary input (OpenAI's, minus edge spaces)."""
        chars = "".join(self.decoder[int(i)] for i in ids)
        raw = bytes(self.byte_decoder[c] for c in chars)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def token_pieces(self, ids: Iterable[int]) -> list[str]:
        """The vocabulary piece of each id, e.g. [..., 'photo</w>', ...]; non-ASCII shows as stand-ins."""
        return [self.decoder[int(i)] for i in ids]

    def word_spans(self, ids: Iterable[int]) -> list[tuple[str, list[int]]]:
        """Group token positions into words, to turn per-token scores into per-word ones.

        Returns (word, positions) pairs. A piece ending in '</w>' closes a word; the special
        tokens are words of their own; ids after <|endoftext|> are padding and are skipped.
        Words are as the tokenizer sees them: "2024" is four words, "!!" is one.
        """
        ids = [int(i) for i in ids]
        spans: list[tuple[str, list[int]]] = []
        current: list[int] = []

        def close_word() -> None:
            chars = "".join(self.decoder[ids[p]] for p in current).replace("</w>", "")
            word = bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")
            spans.append((word, current.copy()))
            current.clear()

        for pos, i in enumerate(ids):
            if i in (SOT, EOT):
                if current:
                    close_word()
                spans.append((self.decoder[i], [pos]))
                if i == EOT:
                    return spans
                continue
            current.append(pos)
            if self.decoder[i].endswith("</w>"):
                close_word()
        if current:
            close_word()
        return spans

    def tokenize(
        self, texts: str | list[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False
    ) -> torch.Tensor:
        """Rows of [SOT] + ids + [EOT], zero-padded: a LongTensor (N, context_length)."""
        return self._tokenize(texts, context_length, truncate)[0]

    def tokenize_counting_cuts(self, texts: list[str], context_length: int = CONTEXT_LENGTH) -> tuple[torch.Tensor, int]:
        """``tokenize(texts, context_length, truncate=True)``, and how many texts it had to cut."""
        return self._tokenize(texts, context_length, truncate=True)

    def _tokenize(self, texts: str | list[str], context_length: int, truncate: bool) -> tuple[torch.Tensor, int]:
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (for SOT and EOT), got {context_length}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)  # (N, context_length)
        cut = 0
        for row, text in enumerate(texts):
            ids = [SOT, *self.encode(text), EOT]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {text[:40]!r}... is {len(ids)} tokens, more than context_length="
                        f"{context_length}; pass truncate=True to cut it"
                    )
                # Keep the first context_length tokens, but the last must still be EOT, since the
                # text encoder reads its output at the EOT position.
                ids = ids[: context_length - 1] + [EOT]
                cut += 1
            out[row, : len(ids)] = torch.tensor(ids)
        return out, cut


@functools.lru_cache(maxsize=None)
def get_tokenizer(vocab_path: str | Path | None = None) -> Tokenizer:
    """One shared Tokenizer per vocabulary file, so its BPE memo is reused across calls."""
    return Tokenizer(vocab_path)


def tokenize(
    texts: str | list[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False
) -> torch.Tensor:
    """Tokenize with the default vocabulary: LongTensor (N, context_length); see Tokenizer.tokenize."""
    return get_tokenizer().tokenize(texts, context_length, truncate)
