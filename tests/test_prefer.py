"""clip_min.prefer (EX2 in miniature): the policy gradient, the KL, the reward, and eval.py prefer end to end."""
import html
import importlib.util
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_min.data import toy
from clip_min.model import CLIP, CLIPConfig
from clip_min.data.phrases import KINDS, PoolError, read_pool, toy_pool
from clip_min.prefer import ClipReward, PreferConfig, align, kl_to_uniform, reinforce_loss, sample
from clip_min.tokenizer import tokenize
from clip_min.weights import save_clip

ROOT = Path(__file__).resolve().parents[1]
# CLIP's vocabulary, so that real phrases tokenize; heads follow OpenAI's width // 64, so it saves in OpenAI's format.
TINY = CLIPConfig(
    embed_dim=32, image_resolution=32, vision_patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
    context_length=77, vocab_size=49408, text_width=64, text_layers=2, text_heads=1,
)


def exact_expected_reward(logits: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """E_{d ~ pi}[r(d)] summed over every description of a 2-slot policy (S = 2, P phrases): (2, P), (P, P) -> ()."""
    p = torch.softmax(logits, dim=-1)  # (2, P)
    return (p[0][:, None] * p[1][None, :] * table).sum()


# ---- the policy gradient -------------------------------------------------------------------------


def test_reinforce_estimate_equals_the_exact_gradient_of_the_expected_reward():
    torch.manual_seed(0)
    P, N, B = 3, 4, 20000  # phrases, samples per estimate, independent estimates
    logits = torch.randn(2, P, dtype=torch.float64)
    table = torch.randn(P, P, dtype=torch.float64)  # r(d) of each of the P^2 descriptions

    exact_logits = logits.clone().requires_grad_()
    exact_expected_reward(exact_logits, table).backward()
    exact = exact_logits.grad  # (2, P)

    # B copies of the policy, each its own "concept": one backward gives B independent estimates.
    copies = logits.expand(B, 2, P).clone().requires_grad_()
    actions = sample(copies, N, torch.Generator().manual_seed(1))  # (B, N, 2)
    rewards = table[actions[..., 0], actions[..., 1]]  # (B, N)
    reinforce_loss(copies, actions, rewards).sum().backward()
    estimates = -copies.grad  # (B, 2, P): the loss is -E[r]
    mean = estimates.mean(dim=0)
    stderr = estimates.std(dim=0) / math.sqrt(B)
    # Sampling error: each of the 6 components is within 5 standard errors of the exact value
    # (a false alarm has probability below 1e-5), and the test has power: the standard errors
    # are a small fraction of the gradient, so a gradient off by 20% would fail.
    assert stderr.max() < 0.03 * exact.abs().max()
    assert ((mean - exact).abs() <= 5 * stderr).all(), (mean, exact, stderr)
    assert not ((mean - 1.2 * exact).abs() <= 5 * stderr).all()


def test_kl_to_uniform_equals_the_kl_of_the_joint_distribution():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 4, dtype=torch.float64)  # K = 3 concepts, S = 2 slots, P = 4 phrases
    p = torch.softmax(logits, dim=-1)
    for k in range(3):
        joint = torch.tensor([p[k, 0, a] * p[k, 1, b] for a, b in itertools.product(range(4), repeat=2)], dtype=torch.float64)
        expected = (joint * (joint * 16).log()).sum()  # uniform start: 1 / 16 per description
        assert kl_to_uniform(logits)[k].item() == pytest.approx(expected.item(), abs=1e-12)
    assert kl_to_uniform(torch.zeros(1, 2, 4)).abs().item() < 1e-7


def favour_phrase(target: int):
    """A reward that counts the slots holding phrase ``target``."""
    return lambda actions: (actions == target).sum(dim=-1).float()


def test_a_reward_that_favours_one_phrase_makes_the_policy_concentrate_on_it():
    config = PreferConfig(slots=2, steps=80, samples=16, lr=0.2, kl_weight=0.01)
    probs = torch.softmax(align(favour_phrase(2), 3, 6, config).logits, dim=-1)  # (K, S, P)
    assert (probs[..., 2] > 0.95).all(), probs[..., 2]


def test_with_a_very_large_kl_weight_the_policy_stays_near_uniform():
    config = PreferConfig(slots=2, steps=80, samples=16, lr=0.2, kl_weight=1e3)
    probs = torch.softmax(align(favour_phrase(2), 3, 6, config).logits, dim=-1)
    assert (probs - 1 / 6).abs().max() < 0.01, probs


def test_the_aligned_policy_reaches_the_kl_regularised_optimum():
    """For a reward that adds over slots, argmax E[r] - beta KL(pi || uniform) is pi_s(p) ∝ exp(w_p / beta)."""
    w = torch.tensor([0.0, 0.3, 1.0, 0.2, -0.5])
    beta = 0.5
    config = PreferConfig(slots=2, steps=200, samples=64, lr=0.05, kl_weight=beta)
    probs = torch.softmax(align(lambda actions: w[actions].sum(dim=-1), 2, 5, config).logits, dim=-1)
    optimum = torch.softmax(w / beta, dim=-1)
    assert (probs - optimum).abs().max() < 0.05, (probs, optimum)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="--samples"):
        PreferConfig(samples=1)
    with pytest.raises(ValueError, match="--template"):
        PreferConfig(template="a photo of {concept}")


# ---- the reward ------------------------------------------------------------------------------------


def test_clip_reward_is_the_mean_score_over_the_concepts_images():
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    images = [torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32)]  # two concepts
    with torch.no_grad():
        features = [model.encode_image(x) for x in images]
    phrases = ["a red circle", "click to enlarge", "in Lyon"]
    reward = ClipReward(model, ["red", "gray"], features, phrases, "An image of {concept}, {description}.")
    actions = torch.tensor([[[0, 1], [2, 2]], [[1, 0], [0, 2]]])  # (K=2, N=2, S=2)
    got = reward(actions)
    scale = model.logit_scale.detach().double().exp()
    for k, concept in enumerate(["red", "gray"]):
        for n in range(2):
            picks = list(dict.fromkeys(actions[k, n].tolist()))  # a repeated phrase is written once
            text = f"An image of {concept}, {', '.join(phrases[i] for i in picks)}."
            with torch.no_grad():
                t = model.encode_text(tokenize([text])).double()  # (1, D)
            c = scale * F.cosine_similarity(features[k].double(), t, dim=-1)  # (n_k,)
            assert got[k, n].item() == pytest.approx(c.mean().item(), abs=1e-4)
    assert reward.text(1, [2, 2]) == "An image of gray, in Lyon."


# ---- phrase pools ------------------------------------------------------------------------------------


def write_pool(path: Path, rows: list[str]) -> Path:
    path.write_text("phrase\tkind\tattribute\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_pool_file_is_read_and_bad_lines_name_themselves(tmp_path):
    good = write_pool(tmp_path / "p.tsv", ["# a comment", "with red wings\tvisual\tcolour", "", "seen in Ohio\tnon-visual\tplaces"])
    pool = read_pool(good)
    assert [(p.text, p.kind, p.attribute) for p in pool] == [("with red wings", "visual", "colour"), ("seen in Ohio", "non-visual", "places")]
    with pytest.raises(PoolError, match=r"p2.tsv:3: kind 'visible'"):
        read_pool(write_pool(tmp_path / "p2.tsv", ["a\tvisual\tcolour", "b\tvisible\tcolour"]))
    with pytest.raises(PoolError, match=r"p3.tsv:3: the phrase 'a' is listed twice"):
        read_pool(write_pool(tmp_path / "p3.tsv", ["a\tvisual\tcolour", "a\tspurious\tboilerplate"]))
    with pytest.raises(PoolError, match=r"p4.tsv:2: expected phrase<TAB>kind<TAB>attribute"):
        read_pool(write_pool(tmp_path / "p4.tsv", ["a visual colour", "b\tvisual\tcolour"]))
    (tmp_path / "p5.tsv").write_text("a\tvisual\tcolour\n")
    with pytest.raises(PoolError, match="header"):
        read_pool(tmp_path / "p5.tsv")


def test_toy_pool_has_every_kind_and_its_non_visual_phrases_come_from_captions():
    pool = toy_pool()
    assert {p.kind for p in pool} == set(KINDS)
    assert len({p.text for p in pool}) == len(pool)
    visual_words = set(toy.COLORS) | set(toy.BACKGROUNDS) | set(toy.SHAPES) | set(toy.RADII) | {"shape", "background"}
    caption_words = (set(toy.SURNAMES) | set(toy.FIRST_NAMES) | set(toy.CITIES) | set(toy.EVENTS)
                     | {n for names in toy.COLOR_SURNAMES.values() for n in names}
                     | {n for nouns in toy.OBJECT_NOUNS.values() for n in nouns})
    for p in pool:
        words = set(re.findall(r"[A-Za-z]+", p.text))
        if p.kind == "non-visual":
            assert not words & visual_words, p
            assert words & caption_words or re.search(r"\d{4}", p.text), p
        if p.kind == "visual":
            assert words & visual_words or p.attribute == "position", p


# ---- eval.py prefer end to end ----------------------------------------------------------------------------


def load_eval_cli():
    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def task_and_weights(tmp_path, monkeypatch):
    """A Food-101-style task of two classes of noise images, with a pool file, and tiny weights."""
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "task"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("red\nblue\n")
    entries = ["red/1", "red/2", "blue/3", "blue/4"]
    (root / "meta" / "test.txt").write_text("".join(e + "\n" for e in entries))
    rng = np.random.default_rng(0)
    for e in entries:
        (root / "images" / e).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / "images" / f"{e}.jpg")
    write_pool(root / "phrases.tsv", ["with a round shape\tvisual\tshape", "on the left\tvisual\tposition",
                                      "in Lyon\tnon-visual\tplaces", "in 1923\tnon-visual\tdates",
                                      "click to enlarge\tspurious\tboilerplate"])
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    save_clip(CLIP(TINY), weights)
    return root, weights


def test_eval_prefer_prints_shares_that_add_up_and_writes_the_html(task_and_weights, tmp_path, capsys):
    task, weights = task_and_weights
    cli = load_eval_cli()
    common = ["prefer", "--weights", weights, "--task", task, "--steps", "5", "--samples", "4", "--eval-samples", "8"]
    page = tmp_path / "out" / "prefer.html"
    code = cli.main([str(a) for a in common + ["--html", page]])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| base |") or line.startswith("| uniform start |")]
    assert len(rows) == 2
    for row in rows:
        shares = [float(cell) for cell in row.strip("|").split("|")[1:4]]
        assert sum(shares) == pytest.approx(100.0, abs=0.15), row
    assert "task/red" in out and "task/blue" in out
    text = page.read_text(encoding="utf-8")
    assert "task/red" in text and "An image of blue, " in text and "click to enlarge" in text
    # The page opens with the summary the terminal prints: the same numbers, before the first model's descriptions.
    body = text[text.index("<body>"):]
    table = body[body.index("<table>"):body.index("</table>")]
    assert body.index("<table>") < body.index("<h2>base</h2>")
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>" in table

    code = cli.main([str(a) for a in common + ["--json"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    (model,) = result["models"]
    assert sum(model["shares"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(model["attribute_shares"].values()) == pytest.approx(1.0, abs=1e-6)
    assert model["reward_gained"] == pytest.approx(model["reward_aligned"] - model["reward_start"], abs=1e-6)
    assert result["start_shares"] == pytest.approx({"visual": 0.4, "non-visual": 0.4, "spurious": 0.2})


def test_eval_prefer_without_a_pool_is_one_line(task_and_weights, capsys):
    task, weights = task_and_weights
    (task / "phrases.tsv").unlink()
    code = load_eval_cli().main(["prefer", "--weights", str(weights), "--task", str(task)])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "no --pool given" in err
