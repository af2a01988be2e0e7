"""clip_min.tokenizer against OpenAI's SimpleTokenizer, loaded by file path as the reference."""
import importlib.util
import random
from pathlib import Path

import pytest
import torch

from clip_min import tokenizer as tk

CLIP_DIR = Path(importlib.util.find_spec("clip").submodule_search_locations[0])


@pytest.fixture(scope="module")
def reference():
    """OpenAI's SimpleTokenizer; its module needs only ftfy and regex, not torchvision."""
    spec = importlib.util.spec_from_file_location("openai_simple_tokenizer", CLIP_DIR / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours():
    return tk.get_tokenizer()


def reference_tokenize(ref, texts, context_length=77, truncate=False):
    """OpenAI's clip.tokenize rule, rebuilt on SimpleTokenizer."""
    sot, eot = ref.encoder["<|startoftext|>"], ref.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot] + ref.encode(text) + [eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError("too long")
            ids = ids[:context_length]
            ids[-1] = eot
        out[row, : len(ids)] = torch.tensor(ids)
    return out


SENTENCES = [
    "a photo of a cat",
    "A man riding a horse on the beach at sunset.",
    "The quick brown fox jumps over the lazy dog!",
    "Two dogs playing frisbee in a park, while children watch.",
    "She's sure they'll come; we've said it's fine and I'm glad you'd agree they're here.",
    "Don't stop believin' -- hold on to that feelin'",
    "An aerial view of New York City's skyline in 2024, taken at 5:30pm.",
    "Café au lait, crème brûlée, naïve résumé, São Paulo, Zürich, Ærøskøbing.",
    "東京の夜景と富士山", "北京欢迎你", "서울의 밤거리", "Москва — столица России",
    "Αθήνα είναι όμορφη", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "STRASSE straße İstanbul ǅemal ﬁnd ﬀ Ⅻ ①②③ ½ ²³ ٣٤ ๑๒",
]
FRAGMENTS = [
    "😀", "🐱‍👤", "👍🏽", "🇫🇷", "❤️", "👨‍👩‍👧‍👦", "🤖🦾", "✨✨✨",
    "&amp;", "&lt;b&gt;", "&#39;", "&quot;", "&amp;amp;", "&amp;lt;", "&#x27;", "&nbsp;", "&copy;",
    "&amp;quot;hi&amp;quot;", "&#8217;", "&bogus;", "& ;",
    "cafÃ©", "â€œquotedâ€\x9d", "doesnâ€™t", "Ã¼ber", "naÃ¯ve", "Ã\xa0 la carte",
    "0", "42", "3.14159", "1,000,000", "2024-06-13", "v1.2.3", "#1", "$9.99", "100%",
    "!!!", "?!?", "...", "---", "***", "(@_@)", "<>", "{}[]", "::", ";-)", "~~~", "^^", "//",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "it's", "WE'VE", "'", "''", "'x",
    " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u200b", "\x1c", "\x85", "\x0b",
    "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "<|endoftext", "|>",
    "HeLLo", "WORLD", "camelCaseWord", "snake_case_word", "x", "Q", "zzzzzzzzzzzz",
    "aaaaaaa", "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "e\u0301", "n\u0303", "\u0627\u0644", "\U0001d400\U0001d401", "\u2126", "ﬀ", "ǈ",
    "http://example.com/a?b=c&d=e", "user@example.com", "#hashtag", "@mention",
]


# Latin-1, Latin Extended, Greek, CJK, emoji (no surrogates: they cannot be UTF-8 encoded).
CODE_POINT_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F)]


def random_text(rng: random.Random) -> str:
    """A random mix of fragments, sentences, separators and random code points."""
    pieces = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.5:
            pieces.append(rng.choice(FRAGMENTS))
        elif kind < 0.7:
            pieces.append(rng.choice(SENTENCES))
        elif kind < 0.85:
            lo, hi = rng.choice(CODE_POINT_RANGES)
            pieces.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        else:
            pieces.append("".join(rng.choice("aAbBeE'-.,!? \t\n0123") for _ in range(rng.randint(1, 15))))
    sep = rng.choice(["", " ", "  ", "\t", "\n", " &amp; "])
    text = sep.join(pieces)
    return text.upper() if rng.random() < 0.1 else text


def corpus() -> list[str]:
    rng = random.Random(0)
    texts = [""] + SENTENCES + FRAGMENTS + [random_text(rng) for _ in range(1100)]
    texts.append(" ".join(SENTENCES) * 8)  # very long: thousands of tokens
    texts.append("".join(FRAGMENTS) * 5)
    return texts


def test_known_example():
    assert tk.tokenize("a photo of a cat")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]


def test_encode_matches_openai(reference, ours):
    texts = corpus()
    assert len(texts) >= 1000
    for text in texts:
        assert ours.encode(text) == reference.encode(text), repr(text)


def test_tokenize_matches_openai(reference):
    texts = corpus()
    short = [t for t in texts if len(reference.encode(t)) <= 75]
    long = [t for t in texts if len(reference.encode(t)) > 75]
    assert len(short) > 500 and len(long) > 10
    got = tk.tokenize(short)
    assert got.dtype == torch.long and got.shape == (len(short), 77)
    assert torch.equal(got, reference_tokenize(reference, short))
    assert torch.equal(tk.tokenize(texts, truncate=True), reference_tokenize(reference, texts, truncate=True))
    assert torch.equal(
        tk.tokenize(texts, context_length=16, truncate=True),
        reference_tokenize(reference, texts, context_length=16, truncate=True),
    )


def test_too_long_raises_and_truncates():
    text = "word " * 100
    with pytest.raises(ValueError, match="truncate=True") as err:
        tk.tokenize(["ok", text])
    assert "'word word" in str(err.value)
    cut = tk.tokenize(text, truncate=True)
    # <|startoftext|> and <|endoftext|> are 49406 and 49407 in OpenAI's vocabulary (typed, not read from tk)
    assert cut.shape == (1, 77) and cut[0, 0] == 49406 and cut[0, -1] == 49407
    exactly_full = "word " * 75  # 75 + 2 tokens: fits without truncation
    assert tk.tokenize(exactly_full)[0, -1] == 49407


def test_decode_round_trip(ours):
    # Punctuation and digits are words of their own, so they come back space-separated.
    assert ours.decode(ours.encode("cats, 12 dogs!")) == "cats , 1 2 dogs !"
    for text in ["a photo of a cat", "two dogs playing in the snow", "the 3 little pigs"]:
        assert ours.decode(ours.encode(text)) == text


def test_word_spans(ours):
    ids = tk.tokenize("Unbelievably photogenic cats!")[0].tolist()
    spans = ours.word_spans(ids)
    words = ["<|startoftext|>", "unbelievably", "photogenic", "cats", "!", "<|endoftext|>"]
    assert [w for w, _ in spans] == words
    positions = [p for _, ps in spans for p in ps]
    assert positions == list(range(len(positions)))  # every token up to EOT, in order, once
    assert ours.token_pieces(ids[:2]) == ["<|startoftext|>", ours.decoder[ids[1]]]


def test_missing_vocab_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tk.VocabNotFoundError, match="pip install openai-clip"):
        tk.Tokenizer()
    with pytest.raises(tk.VocabNotFoundError, match="does not exist"):
        tk.Tokenizer("/nonexistent/bpe.txt.gz")


def test_explicit_vocab_path():
    path = CLIP_DIR / tk.VOCAB_FILE
    assert tk.Tokenizer(path).encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
