"""eval.py and its commands in clip_min/report/: the paper's measurements, on tiny fixtures in each released format.

The numbers are checked against a second computation (by hand, scipy, OpenAI's clip/model.py,
Hugging Face's CLIPModel); the data readers against files written here in the layout each data
set is released in; the command line for its one-line errors and exit code 2.
"""

import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

import eval as eval_script
from clip_min.data.concadia import DataError
from tiny import TINY_OPENAI as TINY, run_eval as run_cli
from clip_min.data.ratings import read_ratings
from clip_min.report.correlation import correlate_with_ratings
from clip_min.report.score import CLIPSCORE_PREFIX
from clip_min.lora import LoRABranch, apply_lora, lora_state_dict
from clip_min.metrics import bootstrap_interval, macro_f1
from clip_min.model import CLIP
from clip_min.images import load_image, preprocess
from clip_min.train.runs import load_run
from clip_min.tokenizer import tokenize
from clip_min.train.config import TrainConfig
from clip_min.data.transfer import encode_task, read_task, zero_shot_f1
from clip_min.weights import load_clip, save_clip

ATOL = 1e-5  # tiny towers (1-2 blocks of width 64) in fp32: rounding ~1e-6 on features of size ~1
TEXTS = ["A red bicycle leans against a brick wall.", "Map of the county.", "Two children play chess in a park."]




def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval.py: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))


def noise_image(path: Path, seed: int, size=(40, 36)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> Path:
    """A tiny CLIP with LayerNorms moved off their trivial start, in OpenAI's format."""
    torch.manual_seed(0)
    model = CLIP(TINY)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name:
                param.add_(0.1 * torch.randn(param.shape))
    path = tmp_path_factory.mktemp("base") / "base.pt"
    save_clip(model, path)
    return path


@pytest.fixture(scope="module")
def lora_run(base_weights, tmp_path_factory) -> Path:
    """A run folder as clip_min.train.folder.save_run writes it, with random (non-zero) LoRA B on both towers."""
    config = TrainConfig(lora_rank=4, lora_alpha=8.0, lora_targets="all-linear", towers="both")
    model = load_clip(base_weights)
    apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets, config.towers)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRABranch):
                module.lora_B.copy_(0.05 * torch.randn(module.lora_B.shape, generator=generator))
    folder = tmp_path_factory.mktemp("run")
    torch.save({"lora": lora_state_dict(model)}, folder / "adapters.pt")
    (folder / "config.json").write_text(json.dumps({**dataclasses.asdict(config), "weights": str(base_weights)}))
    return folder


def pixels_and_tokens(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 32, 32, generator=generator), tokenize(TEXTS)


def scores(model, pixels, tokens) -> torch.Tensor:
    """C(im_i, text_i) = e^t cos for aligned rows, in float64 from the model's fp32 features."""
    with torch.no_grad():
        image, text = model.encode_image(pixels).double(), model.encode_text(tokens).double()
    return model.logit_scale.detach().double().exp() * F.cosine_similarity(image, text, dim=-1)


# ---- metrics -----------------------------------------------------------------------------------


def test_macro_f1_against_a_count_by_hand():
    labels = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 0, 2]
    # class 0: TP 1, FP 1 (image 4), FN 1 (image 1) -> 2 / 4
    # class 1: TP 2, FP 1 (image 1), FN 0           -> 4 / 5
    # class 2: TP 1, FP 0,           FN 1 (image 4) -> 2 / 3
    # class 3: never true, never predicted          -> left out of the mean
    by_hand = (2 / 4 + 4 / 5 + 2 / 3) / 3
    assert macro_f1(np.array(labels), np.array(predictions), 4) == pytest.approx(by_hand, abs=1e-12)
    # The same predictions through the zero-shot path: image i lies on its predicted class's axis.
    classes = torch.eye(4)
    images = classes[predictions] * 3 + 0.1 * torch.rand(6, 4)
    assert zero_shot_f1(images, labels, classes) == pytest.approx(by_hand, abs=1e-12)


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400, 4000):
        wins = (rng.random(n) < 0.7).astype(float)
        low, high = bootstrap_interval(wins)
        assert low <= wins.mean() <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.05


def test_bootstrap_interval_is_95_percent_on_a_distribution_known_exactly():
    """Wins [0, 0, 1]: a resample's mean is 0, 1/3, 2/3 or 1 with chance 8/27, 12/27, 6/27, 1/27.

    Below 1, the chances add up to 26/27 = 96.3%: the 97.5th percentile (a 95% interval) is 1,
    while the 95th (a 90% interval) is 2/3. The 2.5th and the 5th are both 0.
    """
    low, high = bootstrap_interval(np.array([0.0, 0.0, 1.0]), n_resamples=20000)
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_interval_width_is_the_normal_quantile_times_the_standard_error():
    """For 1,000 wins the resampled means are near normal: half-width = 1.959964 sd (95%), not 1.644854 (90%).

    Over 20 draws of wins and seeds, 10,000 resamples put the half-width within 3.3% of 1.96 sd
    (the means move in steps of 0.07 sd); the 90% interval's is 16% narrower.
    """
    wins = (np.random.default_rng(1).random(1000) < 0.7).astype(float)
    low, high = bootstrap_interval(wins, n_resamples=10000)
    sd = wins.std() / math.sqrt(len(wins))  # the standard deviation of a resample's mean
    assert (high - low) / 2 == pytest.approx(1.959964 * sd, rel=0.06)


# ---- BLV and sighted ratings (Kreiss et al. 2022a) ------------------------------------------

BLV_COLUMNS = ["context", "participant", "img_id", "description", "q_reconstructivity", "q_relevance",
               "q_irrelevance", "q_imgfit", "q_overall", "article_text"]
SIGHTED_COLUMNS = ["context", "anon_worker_id", "trial_number", "img_id", "img_file", "description",
                   "q_overall.preimg", "q_overall.postimg", "q_reconstructivity.preimg", "q_relevance.preimg",
                   "q_relevance.postimg", "q_irrelevance.preimg", "q_irrelevance.postimg", "q_imgfit.preimg",
                   "q_imgfit.postimg", "article_text"]
# (context, img_id, img_file, description)
DESCRIPTIONS = [
    ("Advertising", "soccer1", "soccer, one.jpg", "A soccer field with billboards."),
    ("Advertising", "soccer1", "soccer, one.jpg", "One player kneels while another stands behind him."),
    ("Cuisine", "table2", "table.png", "A table set with salads and bread."),
    ("Cuisine", "table2", "table.png", "Dinner."),
    ("Cuisine", "broken3", "broken.jpg", "A photo that will not open."),
]
# Per description: BLV (overall, reconstructivity) per rater; "NA" is R's missing value.
BLV_RATINGS = [[(3, 4), (1, 2)], [(5, 5), (4, "NA")], [(4, 3), (2, 2), (3, 4)], [(1, 1), (2, 1)], [(3, 3), (3, 3)]]
# Per description: sighted (overall.preimg, overall.postimg) per rater.
SIGHTED_RATINGS = [[(4, 5), (3, 3)], [(5, 4)], [(2, 2), (4, 1)], [(1, 2), ("", 1)], [(2, 2)]]


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, 3) for c in columns})
    return path


@pytest.fixture
def ratings_folder(tmp_path) -> Path:
    folder = tmp_path / "behavioral_data"
    folder.mkdir()
    blv, sighted = [], []
    for (context, img_id, img_file, text), raters in zip(DESCRIPTIONS, BLV_RATINGS):
        for i, (overall, imagine) in enumerate(raters):
            # The release has descriptions with stray whitespace; it must not split a description.
            shown = "\n" + text if i == 1 else text
            blv.append(dict(context=context, participant=f"p{i}", img_id=img_id, description=shown,
                            q_overall=overall, q_reconstructivity=imagine, article_text="An article, with commas."))
    for (context, img_id, img_file, text), raters in zip(DESCRIPTIONS, SIGHTED_RATINGS):
        for i, (pre, post) in enumerate(raters):
            sighted.append({"context": context, "anon_worker_id": str(i), "trial_number": i, "img_id": img_id,
                            "img_file": img_file, "description": text, "q_overall.preimg": pre, "q_overall.postimg": post})
    write_csv(folder / "blv_data_criticaltrials.csv", BLV_COLUMNS, blv)
    write_csv(folder / "sighted_data_criticaltrials.csv", SIGHTED_COLUMNS, sighted)
    write_csv(folder / "all_descriptions.csv", ["context", "img_id", "img_file", "description", "article_text"],
              [dict(context=c, img_id=i, img_file=f, description=d) for c, i, f, d in DESCRIPTIONS])
    images = folder / "images"
    images.mkdir()
    noise_image(images / "soccer, one.jpg", 1)
    noise_image(images / "table.png", 2)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def mean_of_numbers(values) -> float:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers)


def test_ratings_are_averaged_per_description(ratings_folder):
    ratings = read_ratings(ratings_folder)
    keys = [(c, i, d) for c, i, _, d in DESCRIPTIONS]
    assert ratings.groups == ["BLV", "sighted, no image", "sighted, with image"]
    expected = {
        ("overall", "BLV"): [mean_of_numbers(o for o, _ in r) for r in BLV_RATINGS],
        ("imaginability", "BLV"): [mean_of_numbers(m for _, m in r) for r in BLV_RATINGS],
        ("overall", "sighted, no image"): [mean_of_numbers(p for p, _ in r) for r in SIGHTED_RATINGS],
        ("overall", "sighted, with image"): [mean_of_numbers(p for _, p in r) for r in SIGHTED_RATINGS],
    }
    for cell, means in expected.items():
        assert ratings.means[cell] == pytest.approx(dict(zip(keys, means)), abs=1e-12)
    assert ratings.means["imaginability", "BLV"][keys[1]] == 5.0  # the NA left out, not read as 0
    assert ("imaginability", "sighted, with image") not in ratings.means  # sighted raters were not asked
    assert ratings.skipped["BLV imaginability ratings missing or not a number"] == 1
    assert ratings.skipped["sighted, no image overall ratings missing or not a number"] == 1
    assert ratings.image_files == {"soccer1": "soccer, one.jpg", "table2": "table.png", "broken3": "broken.jpg"}


def test_three_or_more_ratings_of_a_description_give_their_mean_not_their_median(tmp_path):
    """Three and four raters a description, so the mean differs from the median and from any one rating."""
    folder = tmp_path / "behavioral_data"
    folder.mkdir()
    soccer, table = ("Advertising", "soccer1", "A soccer field."), ("Cuisine", "table2", "Dinner.")
    # (q_overall, q_reconstructivity) per BLV rater; (q_overall.preimg, q_overall.postimg) per sighted rater.
    blv = {soccer: [(1, 2), (2, 2), (5, 5)], table: [(4, 1), (4, 5), (5, 5), (1, 5)]}
    sighted = {soccer: [(1, 5), (2, 4), (4, 1)], table: [(5, 2), (5, 3), (1, 3), (2, 5)]}
    write_csv(folder / "blv_data_criticaltrials.csv", BLV_COLUMNS, [
        dict(context=c, participant=f"p{n}", img_id=i, description=d, q_overall=o, q_reconstructivity=m)
        for (c, i, d), raters in blv.items() for n, (o, m) in enumerate(raters)])
    write_csv(folder / "sighted_data_criticaltrials.csv", SIGHTED_COLUMNS, [
        {"context": c, "anon_worker_id": str(n), "img_id": i, "img_file": f"{i}.jpg", "description": d,
         "q_overall.preimg": pre, "q_overall.postimg": post}
        for (c, i, d), raters in sighted.items() for n, (pre, post) in enumerate(raters)])
    means = read_ratings(folder).means
    # By hand; the medians would be 2, 4 / 2, 5 / 2, 3.5 / 4, 3.
    assert means["overall", "BLV"] == pytest.approx({soccer: 8 / 3, table: 14 / 4}, abs=1e-12)
    assert means["imaginability", "BLV"] == pytest.approx({soccer: 3.0, table: 4.0}, abs=1e-12)
    assert means["overall", "sighted, no image"] == pytest.approx({soccer: 7 / 3, table: 13 / 4}, abs=1e-12)
    assert means["overall", "sighted, with image"] == pytest.approx({soccer: 10 / 3, table: 13 / 4}, abs=1e-12)


def test_correlations_match_scipy(ratings_folder):
    ratings = read_ratings(ratings_folder)
    keys = [(c, i, d) for c, i, _, d in DESCRIPTIONS]
    model_scores = dict(zip(keys, [0.31, 0.12, 0.27, 0.05, 0.2]))
    model_scores.pop(keys[4])  # e.g. its image did not decode: it drops out of every cell
    means = [mean_of_numbers(o for o, _ in r) for r in BLV_RATINGS[:4]]
    x = [model_scores[k] for k in keys[:4]]
    got = correlate_with_ratings(model_scores, ratings.means["overall", "BLV"])
    pearson, spearman = stats.pearsonr(x, means), stats.spearmanr(x, means)
    assert got["n"] == 4
    assert got["pearson"] == pytest.approx(pearson.statistic, abs=1e-12)
    assert got["pearson_p"] == pytest.approx(pearson.pvalue, abs=1e-12)
    assert got["spearman"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert got["spearman_p"] == pytest.approx(spearman.pvalue, abs=1e-12)
    assert math.isnan(correlate_with_ratings(dict(list(model_scores.items())[:2]), ratings.means["overall", "BLV"])["pearson"])


def test_blv_command_prints_table_2_and_counts_bad_images(ratings_folder, base_weights, capsys):
    code, out, err = run_cli(["blv", "--weights", base_weights, "--ratings", ratings_folder, "--device", "cpu"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "| dimension | BLV | sighted, no image | sighted, with image |" in lines
    imaginability = next(line for line in lines if line.startswith("| imaginability |"))
    assert imaginability.endswith("| not asked |")
    assert "1 descriptions whose image does not decode (1 images)" in err
    code, out, _ = run_cli(["blv", "--weights", base_weights, "--ratings", ratings_folder, "--json"], capsys)
    cell = json.loads(out)["cells"]["overall"]["BLV"]
    assert code == 0 and cell["n"] == 4 and -1 <= cell["pearson"] <= 1


def test_blv_csv_without_the_expected_columns_is_one_line(ratings_folder, base_weights, capsys):
    path = ratings_folder / "blv_data_criticaltrials.csv"
    write_csv(path, [c for c in BLV_COLUMNS if c not in ("q_overall", "q_relevance")], [])
    code, _, err = run_cli(["blv", "--weights", base_weights, "--ratings", ratings_folder], capsys)
    assert_one_line_error(code, err, "blv_data_criticaltrials.csv", "q_overall, q_relevance")


# ---- transfer task readers ------------------------------------------------------------------


class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2's str, as cPickle (protocol 2) wrote the released CIFAR files.

    Python 3 would write protocol-2 bytes as calls to _codecs.encode, which the release never has.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_python2_str(obj.encode("latin-1"))

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_str


def cifar_pickle(obj) -> bytes:
    """A pickle like the released ones: protocol 2, Python 2 strings, numpy 1's module name for _reconstruct."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@pytest.fixture
def cifar_folder(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    data = images.transpose(0, 3, 1, 2).reshape(5, 3072)  # the release: all red, then green, then blue
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "test").write_bytes(cifar_pickle({b"filenames": [b"a.png"] * 5, b"batch_label": b"testing batch 1 of 1",
                                                b"fine_labels": [2, 0, 1, 2, 0], b"coarse_labels": [0] * 5, b"data": data}))
    (folder / "meta").write_bytes(cifar_pickle({b"fine_label_names": [b"apple", b"aquarium_fish", b"baby"],
                                                b"coarse_label_names": [b"fruit"]}))
    return folder.parent, images


def test_cifar100_release_is_read(cifar_folder, base_weights):
    root, images = cifar_folder
    assert b"numpy.core.multiarray\n_reconstruct" in (root / "cifar-100-python" / "test").read_bytes()
    task = read_task(root)  # the folder holding cifar-100-python/
    assert task.classes == ["apple", "aquarium fish", "baby"]
    assert task.labels == [2, 0, 1, 2, 0]
    np.testing.assert_array_equal(task.pixels, images)
    model = load_clip(base_weights)
    features, ok = encode_task(model, task, "tiny")
    with torch.no_grad():
        direct = model.encode_image(torch.stack([preprocess(Image.fromarray(image), 32) for image in images]))
    assert ok.all() and (features - direct).abs().max() <= ATOL
    assert len(list((Path(os.environ["CLIP_MIN_CACHE"]) / "features").glob("arrays-*.pt"))) == 1


def test_cifar_pickle_naming_other_globals_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(cifar_pickle({b"data": Exploit(), b"fine_labels": []}))
    (folder / "meta").write_bytes(cifar_pickle({b"fine_label_names": []}))
    with pytest.raises(DataError, match=r"global (posix|os|nt)\.system is not allowed"):
        read_task(folder)
    assert not marker.exists()


def test_imagenet_validation_layout(tmp_path):
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
        "n01484850 great white shark, white shark, man-eater\n"
    )
    val = tmp_path / "val"
    for synset, names in (("n01440764", ["b.JPEG", "a.JPEG"]), ("n01484850", ["c.JPEG"])):
        (val / synset).mkdir(parents=True)
        for i, name in enumerate(names):
            noise_image(val / synset / name, i)
    (val / "n01484850" / "notes.txt").write_text("not an image")
    task = read_task(val)
    assert task.classes == ["tench", "goldfish", "great white shark"]
    assert [p.relative_to(val).as_posix() for p in task.image_paths] == ["n01440764/a.JPEG", "n01440764/b.JPEG", "n01484850/c.JPEG"]
    assert task.labels == [0, 0, 2]


def write_food101(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\n")
    (root / "meta" / "test.txt").write_text("apple_pie/1005649\nbaby_back_ribs/2\napple_pie/3\n")
    for i, entry in enumerate(["apple_pie/1005649", "baby_back_ribs/2", "apple_pie/3"]):
        (root / "images" / entry).parent.mkdir(parents=True, exist_ok=True)
        noise_image(root / "images" / f"{entry}.jpg", i)
    return root


def test_food101_layout_and_the_transfer_command(tmp_path, cifar_folder, base_weights, capsys):
    food = write_food101(tmp_path / "food-101")
    task = read_task(food)
    assert task.classes == ["apple pie", "baby back ribs"] and task.labels == [0, 1, 0]
    with pytest.raises(DataError, match="not a transfer task folder"):
        read_task(tmp_path / "food-101" / "images")
    code, out, err = run_cli(["transfer", "--weights", base_weights, "--task", food, cifar_folder[0], "--json"], capsys)
    assert code == 0, err
    tasks = json.loads(out)["tasks"]
    assert tasks["food-101"]["images"] == 3 and tasks["cifar100"]["classes"] == 3
    assert all(0 <= t["macro_f1"] <= 1 for t in tasks.values())


# ---- concadia and score ----------------------------------------------------------------------


def test_concadia_command_matches_a_direct_computation(tmp_path, base_weights, capsys):
    folder = tmp_path / "concadia"
    (folder / "resized").mkdir(parents=True)
    records = []
    for i in range(6):
        noise_image(folder / "resized" / f"{i}.jpg", i)
        records.append({"article_id": f"a{i}", "filename": f"{i}.jpg", "split": "test",
                        "description": {"raw": TEXTS[i % 3], "tokens": []}, "caption": {"raw": TEXTS[(i + 1) % 3], "tokens": []}})
    (folder / "wiki_split.json").write_text(json.dumps({"images": records}))
    code, out, err = run_cli(["concadia", "--weights", base_weights, "--data", folder, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    model = load_clip(base_weights)
    pixels = torch.stack([preprocess(load_image(folder / "resized" / f"{i}.jpg"), 32) for i in range(6)])
    c_des = scores(model, pixels, tokenize([r["description"]["raw"] for r in records]))
    c_cap = scores(model, pixels, tokenize([r["caption"]["raw"] for r in records]))
    assert result["images"] == 6
    assert result["accuracy"] == pytest.approx(int((c_des > c_cap).sum()) / 6, abs=1e-7)
    assert result["ci95"][0] <= result["accuracy"] <= result["ci95"][1]


def test_score_pairs_counts_bad_rows(tmp_path, base_weights, capsys):
    noise_image(tmp_path / "good.png", 0)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    pairs = write_csv(tmp_path / "pairs.csv", ["image", "text"], [
        dict(image="good.png", text=TEXTS[0]), dict(image="good.png", text=""), dict(image="bad.jpg", text=TEXTS[1])])
    code, out, err = run_cli(["score", "--weights", base_weights, "--pairs", pairs, "--json"], capsys)
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert "1 rows without an image or a text" in err and "1 rows whose image is missing or does not decode" in err
    model = load_clip(base_weights)
    pixels = preprocess(load_image(tmp_path / "good.png"), 32)[None]
    with torch.no_grad():
        image = model.encode_image(pixels).double()
        prefixed = model.encode_text(tokenize([CLIPSCORE_PREFIX + TEXTS[0]])).double()
    assert row["clipscore"] == pytest.approx(2.5 * max(F.cosine_similarity(image, prefixed).item(), 0), abs=ATOL)
    assert row["C"] == pytest.approx(scores(model, pixels, tokenize([TEXTS[0]])).item(), abs=ATOL)


def test_score_takes_several_images_and_texts_and_labels_every_pair(tmp_path, base_weights, capsys):
    """Each --image with each --text, in order, a row naming both: comparing a description with a caption."""
    images = [noise_image(tmp_path / "one.png", 0), noise_image(tmp_path / "two.png", 1)]
    argv = ["score", "--weights", base_weights, "--image", images[0], "--image", images[1]]
    for text in TEXTS[:2]:
        argv += ["--text", text]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["CLIPScore", "C", "image", "text"] and len(rows) == 4
    model = load_clip(base_weights)
    for row, (image, text) in zip(rows, [(i, t) for i in images for t in TEXTS[:2]]):
        clip_score, c, shown, rest = row.split(maxsplit=3)
        assert (shown, rest) == (str(image), text)
        pixels = preprocess(load_image(image), 32)[None]
        with torch.no_grad():
            features = model.encode_image(pixels).double()
            prefixed = model.encode_text(tokenize([CLIPSCORE_PREFIX + text])).double()
        assert float(clip_score) == pytest.approx(2.5 * max(F.cosine_similarity(features, prefixed).item(), 0), abs=1e-4)
        assert float(c) == pytest.approx(scores(model, pixels, tokenize([text])).item(), abs=1e-4)


def test_score_of_an_image_that_does_not_decode_is_one_line(tmp_path, base_weights, capsys):
    (tmp_path / "cat.jpg").write_bytes(b"\x89PNG but truncated")
    code, _, err = run_cli(["score", "--weights", base_weights, "--image", tmp_path / "cat.jpg", "--text", "a cat"], capsys)
    assert_one_line_error(code, err, "--image", "cat.jpg", "cannot decode")


def test_unknown_flags_are_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_script.main(["score", "--no-such-flag"])
    assert exit_info.value.code == 2


# ---- export ------------------------------------------------------------------------------------


def openai_reference_module():
    folder = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("openai_clip_model", os.path.join(folder, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_openai_scores_as_the_run(lora_run, base_weights, tmp_path, capsys):
    out = tmp_path / "merged.pt"
    code, _, err = run_cli(["export", "--run", lora_run, "--step", "last", "--format", "openai", "--out", out], capsys)
    assert code == 0, err
    pixels, tokens = pixels_and_tokens()
    expected = scores(load_run(lora_run, step="last").model, pixels, tokens)  # adapters beside the weights, unmerged
    assert (scores(load_clip(base_weights), pixels, tokens) - expected).abs().max() > 1e-3  # the LoRA matters
    assert (scores(load_clip(out), pixels, tokens) - expected).abs().max() <= ATOL
    # OpenAI's own build_model reads the file's state dict; it casts to fp16, so the exact fp32
    # weights are loaded back after it has read the shapes off them.
    state_dict = torch.load(out, map_location="cpu", weights_only=True)
    reference = openai_reference_module().build_model(dict(state_dict)).float()
    reference.load_state_dict(state_dict)
    assert (scores(reference.eval(), pixels, tokens) - expected).abs().max() <= ATOL


def test_export_hf_loads_in_transformers(lora_run, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    code, _, err = run_cli(["export", "--run", lora_run, "--step", "last", "--format", "hf", "--out", out], capsys)
    assert code == 0, err
    pixels, tokens = pixels_and_tokens()
    run_model = load_run(lora_run, step="last").model
    hf = transformers.CLIPModel.from_pretrained(out).eval()
    with torch.no_grad():
        want_image, want_text = run_model.encode_image(pixels), run_model.encode_text(tokens)
        got_image = hf.get_image_features(pixel_values=pixels)
        got_text = hf.get_text_features(input_ids=tokens)
    got_image = getattr(got_image, "pooler_output", got_image)
    got_text = getattr(got_text, "pooler_output", got_text)
    assert (got_image - want_image).abs().max() <= ATOL
    assert (got_text - want_text).abs().max() <= ATOL
    assert (hf.logit_scale - run_model.logit_scale).abs().item() == 0
    assert (scores(load_clip(out), pixels, tokens) - scores(run_model, pixels, tokens)).abs().max() <= ATOL


def test_export_of_a_run_without_adapters_is_one_line(lora_run, tmp_path, capsys):
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "config.json").write_text((lora_run / "config.json").read_text())
    code, _, err = run_cli(["export", "--run", broken, "--format", "openai", "--out", tmp_path / "x.pt"], capsys)
    assert_one_line_error(code, err, "selected.pt is missing", "--step last")
    code, _, err = run_cli(["export", "--run", broken, "--step", "last", "--format", "openai", "--out",
                            tmp_path / "x.pt"], capsys)
    assert_one_line_error(code, err, "adapters.pt is missing")
    assert not (tmp_path / "x.pt").exists()


def test_sighted_cells_keep_only_the_descriptions_blv_participants_rated(ratings_folder):
    # The released layout rates more descriptions by sighted participants than by BLV ones (270 vs 68);
    # add two sighted-only descriptions with extreme ratings: they must not enter any cell.
    path = ratings_folder / "sighted_data_criticaltrials.csv"
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for i, text in enumerate(["A sighted-only description.", "Another one nobody blind rated."]):
        rows.append({**rows[0], "img_id": "soccer1", "description": text, "q_overall.preimg": 5 - 4 * i,
                     "q_overall.postimg": 1 + 4 * i})
    write_csv(path, SIGHTED_COLUMNS, rows)
    ratings = read_ratings(ratings_folder)
    blv_keys = {(c, i, d) for c, i, _, d in DESCRIPTIONS}
    for group in ("sighted, no image", "sighted, with image"):
        assert set(ratings.means["overall", group]) == blv_keys
    assert ratings.skipped["sighted-rated descriptions no BLV participant rated (Kreiss et al. leave them out)"] == 2


def test_the_authors_keep_sighted_ratings_by_text_and_drop_the_two_attention_check_images(ratings_folder):
    """cosid.py: sighted rows whose description text BLV participants rated (whatever their context or
    img_id), and no description of the images 'guitar' or '640px-parc_agen'; ours keys by all three."""
    path = ratings_folder / "sighted_data_criticaltrials.csv"
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    same_text = {**rows[0], "context": "Sports", "img_id": "soccer9", "q_overall.preimg": 1}  # a BLV-rated text
    rows.append(same_text)
    write_csv(path, SIGHTED_COLUMNS, rows)
    blv_path = ratings_folder / "blv_data_criticaltrials.csv"
    with open(blv_path, newline="", encoding="utf-8") as file:
        blv = list(csv.DictReader(file))
    blv.append({**blv[0], "img_id": "guitar_1", "description": "A guitar on a stand."})
    write_csv(blv_path, BLV_COLUMNS, blv)
    mapping = ratings_folder / "all_descriptions.csv"
    with open(mapping, newline="", encoding="utf-8") as file:
        described = list(csv.DictReader(file))
    described.append(dict(context=blv[0]["context"], img_id="guitar_1", img_file="guitar.jpg",
                          description="A guitar on a stand."))
    write_csv(mapping, ["context", "img_id", "img_file", "description", "article_text"], described)
    moved = ("Sports", "soccer9", " ".join(same_text["description"].split()))
    guitar = (blv[0]["context"], "guitar_1", "A guitar on a stand.")

    ours = read_ratings(ratings_folder)
    assert moved not in ours.means["overall", "sighted, no image"] and guitar in ours.means["overall", "BLV"]
    authors = read_ratings(ratings_folder, sighted_by="text", drop_images=("guitar", "640px-parc_agen"))
    assert authors.means["overall", "sighted, no image"][moved] == 1.0
    assert all(guitar not in means for means in authors.means.values())
    assert authors.skipped["rated descriptions of the images guitar, 640px-parc_agen (cosid.py drops them)"] == 1
    assert "sighted-rated descriptions no BLV participant rated (Kreiss et al. leave them out)" not in authors.skipped


def test_blv_takes_the_runs_recipe_step_and_descriptions(ratings_folder, base_weights, lora_run, tmp_path, capsys):
    from clip_min.train.selected import NAME

    run = tmp_path / "run"
    run.mkdir()
    for name in ("adapters.pt", "config.json"):
        (run / name).write_bytes((lora_run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "recipe": "authors"}))
    code, out, err = run_cli(["blv", "--run", run, "--ratings", ratings_folder, "--json", "--device", "cpu"], capsys)
    assert code == 0, err  # the last step: no selected.pt is needed
    assert json.loads(out)["recipe"] == "authors" and json.loads(out)["step"] == "last"
    code, _, err = run_cli(["blv", "--run", run, "--ratings", ratings_folder, "--recipe", "paper"], capsys)
    assert_one_line_error(code, err, f"{NAME} is missing")  # the paper's recipe: Appendix C's selected step
    code, out, err = run_cli(["blv", "--weights", base_weights, "--ratings", ratings_folder, "--json"], capsys)
    assert code == 0 and json.loads(out)["recipe"] == "authors", err  # real weights: the authors', as train.py


def test_blv_finds_the_rated_images_in_the_released_repository_layout(ratings_folder, base_weights, tmp_path, capsys):
    repo = tmp_path / "contextual-description-evaluation"
    (repo / "behavioral_experiments" / "evaluation_sighted").mkdir(parents=True)
    ratings_folder.rename(repo / "behavioral_data")
    (repo / "behavioral_data" / "images").rename(repo / "behavioral_experiments" / "evaluation_sighted" / "stimuli")
    for given in (repo, repo / "behavioral_data"):  # the repository's root, or its behavioral_data/
        code, out, err = run_cli(["blv", "--weights", base_weights, "--ratings", given, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["cells"]["overall"]["BLV"]["n"] == 4


def test_attribute_data_skips_and_counts_undecodable_images(tmp_path, base_weights, capsys):
    folder = tmp_path / "concadia"
    (folder / "resized").mkdir(parents=True)
    records = []
    for i in range(3):
        name = f"{i}.jpg"
        if i == 1:
            (folder / "resized" / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        else:
            noise_image(folder / "resized" / name, i)
        records.append(dict(article_id=f"A{i}", filename=name, split="test",
                            description=dict(raw=TEXTS[i], tokens=[]), caption=dict(raw="Map of the county.", tokens=[])))
    (folder / "wiki_split.json").write_text(json.dumps(dict(images=records)))
    code, out, err = run_cli(["attribute", "--weights", base_weights, "--data", folder, "--steps", "4",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    assert "left out: 1 images that do not decode" in err
    assert out.count("description: C(im, text)") == 2
