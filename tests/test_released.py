"""The release's other evaluations (clip_min/report/released.py) on small files written in each data set's released format.

Each number is recomputed here from the model's own towers, with the statistic written out
(Kendall's tau-c by counting pairs, Pearson's r and macro-F1 from their definitions).
"""

import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

import eval as eval_script
from clip_min.data.clip_tasks import read_country211, read_country_names, read_rendered_sst2
from clip_min.data.concadia import read_concadia
from clip_min.data.flickr8k import read_flickr8k_expert
from clip_min.images import load_image, preprocess
from clip_min.model import CLIP
from clip_min.report.released import kendall_tau_c
from clip_min.tokenizer import tokenize
from clip_min.weights import load_clip, save_clip
from tiny import TINY_OPENAI, one_line_error, run_eval


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("weights") / "base.pt"
    save_clip(CLIP(TINY_OPENAI), path)
    return path


def noise_image(path, seed: int, suffix_size=(48, 40)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (suffix_size[1], suffix_size[0], 3), dtype=np.uint8)).save(path)
    return path


@torch.no_grad()
def cosines(weights, images, texts) -> np.ndarray:
    """cos(image_i, text_i) from the model's towers, in float64."""
    model = load_clip(weights).eval()
    pixels = torch.stack([preprocess(load_image(p), model.config.image_resolution) for p in images])
    image = model.encode_image(pixels).double()
    text = model.encode_text(tokenize(texts)).double()
    return F.cosine_similarity(image, text, dim=-1).numpy()


def tau_c_by_hand(x, y) -> float:
    """Stuart's tau-c: 2 (concordant - discordant) / (n^2 (m - 1) / m), m the fewer distinct values of x and y."""
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sign = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        concordant += sign > 0
        discordant += sign < 0
    n, m = len(x), min(len(set(x)), len(set(y)))
    return 2 * (concordant - discordant) / (n**2 * (m - 1) / m)


def test_kendall_tau_c_is_stuarts_not_tau_b():
    # Ratings on a 4-point scale against scores with many values: the table is not square, so tau-b
    # (which the default kendalltau gives) and tau-c differ.
    x = np.array([0.31, 0.12, 0.27, 0.05, 0.2, 0.44, 0.18, 0.12, 0.39])
    y = np.array([3, 1, 4, 1, 2, 4, 2, 2, 3])
    tau, p = kendall_tau_c(x, y)
    assert tau == pytest.approx(tau_c_by_hand(x, y), abs=1e-12)
    assert abs(tau - stats.kendalltau(x, y).statistic) > 0.05
    assert 0 < p < 0.05


# ---- Flickr8k-Expert ----

CAPTIONS = {  # image -> its five captions, as Flickr8k.token.txt lists them
    "1000268201_693b08cb0e.jpg": ["A child in a pink dress is climbing up a set of stairs in an entry way .",
                                  "A girl going into a wooden building .", "A little girl climbing into a wooden playhouse .",
                                  "A little girl climbing the stairs to her playhouse .",
                                  "A little girl in a pink dress going into a wooden cabin ."],
    "1001773457_577c3a7d70.jpg": ["A black dog and a spotted dog are fighting", "A black dog and a tri-colored dog playing "
                                  "with each other on the road .", "A black dog and a white dog with brown spots are "
                                  "staring at each other in the street .", "Two dogs of different breeds looking at "
                                  "each other on the road .", "Two dogs on pavement moving toward each other ."],
    "1002674143_1b742ab4b8.jpg": ["A little girl covered in paint sits in front of a painted rainbow with her hands in a "
                                  "bowl .", "A little girl is sitting in front of a large painted rainbow .",
                                  "A small girl in the grass plays with fingerpaints in front of a white canvas with a "
                                  "rainbow on it .", "There is a girl with pigtails sitting in front of a rainbow painting .",
                                  "Young girl with pigtails painting outside in the grass ."],
}
# (image, caption id, three expert scores): the released lines' shape; the caption is another image's.
EXPERT = [
    ("1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg#2", (1, 1, 1)),
    ("1000268201_693b08cb0e.jpg", "1002674143_1b742ab4b8.jpg#4", (2, 3, 2)),
    ("1001773457_577c3a7d70.jpg", "1000268201_693b08cb0e.jpg#1", (1, 2, 1)),
    ("1001773457_577c3a7d70.jpg", "1001773457_577c3a7d70.jpg#0", (4, 4, 4)),  # its own caption: left out
    ("1002674143_1b742ab4b8.jpg", "1000268201_693b08cb0e.jpg#4", (3, 2, 2)),
    ("1002674143_1b742ab4b8.jpg", "1001773457_577c3a7d70.jpg#4", (1, 1, 2)),
    ("1002674143_1b742ab4b8.jpg", "2000000000_0000000000.jpg#0", (2, 2, 2)),  # no such caption: left out
    ("3000000000_missing00.jpg", "1000268201_693b08cb0e.jpg#0", (4, 3, 4)),  # no such image: left out
]


@pytest.fixture
def flickr(tmp_path):
    root = tmp_path / "flickr8k"
    lines = [f"{image}#{i}\t{caption}" for image, captions in CAPTIONS.items() for i, caption in enumerate(captions)]
    (root / "Flickr8k_text").mkdir(parents=True)
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr8k_text" / "ExpertAnnotations.txt").write_text(
        "".join(f"{image}\t{caption_id}\t{a}\t{b}\t{c}\n" for image, caption_id, (a, b, c) in EXPERT))
    for seed, image in enumerate(CAPTIONS):
        noise_image(root / "Flicker8k_Dataset" / image, seed)
    return root


def test_flickr8k_reads_the_released_files_and_counts_what_it_leaves_out(flickr):
    data = read_flickr8k_expert(flickr)
    assert [(p.image.name, p.caption, p.scores) for p in data.pairs][:2] == [
        ("1000268201_693b08cb0e.jpg", CAPTIONS["1001773457_577c3a7d70.jpg"][2], (1, 1, 1)),
        ("1000268201_693b08cb0e.jpg", CAPTIONS["1002674143_1b742ab4b8.jpg"][4], (2, 3, 2))]
    assert len(data.pairs) == 5 and sum(data.skipped.values()) == 3
    assert data.skipped["pairs whose caption is one of the image's own (left out, as SPICE and CLIPScore do)"] == 1


def test_flickr8k_command_is_tau_c_over_every_experts_score(flickr, weights, capsys):
    code, out, err = run_eval(["flickr8k", "--weights", weights, "--data", flickr, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    got = json.loads(out)
    kept = [e for e in EXPERT if e[0] in CAPTIONS and e[1].split("#")[0] in CAPTIONS and e[0] != e[1].split("#")[0]]
    texts = [CAPTIONS[cid.split("#")[0]][int(cid.split("#")[1])] for _, cid, _ in kept]
    cos = cosines(weights, [flickr / "Flicker8k_Dataset" / image for image, _, _ in kept], texts)
    x = np.repeat(cos, 3)
    y = np.array([s for _, _, scores in kept for s in scores], dtype=np.float64)
    assert got["judgements"] == 15 and got["pairs"] == 5
    assert got["kendall_tau_c"] == pytest.approx(tau_c_by_hand(x, y), abs=1e-9)
    assert "left out: 1 pairs whose image is missing from" in err


@pytest.mark.parametrize("line, message", [
    ("1000268201_693b08cb0e.jpg\t1001773457_577c3a7d70.jpg#2\t1\t1\n", "line 2: expected the image"),
    ("1000268201_693b08cb0e.jpg\t1001773457_577c3a7d70.jpg#2\t1\t5\t1\n", "three scores 1 to 4"),
])
def test_a_damaged_expert_file_is_a_one_line_error(flickr, weights, capsys, line, message):
    path = flickr / "Flickr8k_text" / "ExpertAnnotations.txt"
    path.write_text(path.read_text().splitlines(keepends=True)[0] + line)
    assert eval_script.main(["flickr8k", "--weights", str(weights), "--data", str(flickr)]) == 2
    assert message in one_line_error(capsys, "eval.py")


def test_flickr8k_without_its_caption_file_says_where_it_looked(flickr, capsys):
    (flickr / "Flickr8k_text" / "Flickr8k.token.txt").unlink()
    assert eval_script.main(["flickr8k", "--data", str(flickr)]) == 2
    assert "Flickr8k.token.txt is in neither" in one_line_error(capsys, "eval.py")


# ---- Rendered SST2 and Country211 ----


def macro_f1_by_hand(labels, predictions) -> float:
    """Mean over the classes that occur or are predicted of 2 TP / (2 TP + FP + FN)."""
    scores = []
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(1 for l, p in zip(labels, predictions) if l == c and p == c)
        fp = sum(1 for l, p in zip(labels, predictions) if l != c and p == c)
        fn = sum(1 for l, p in zip(labels, predictions) if l == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


@torch.no_grad()
def zero_shot_by_hand(weights, images, prompts) -> list[int]:
    model = load_clip(weights).eval()
    pixels = torch.stack([preprocess(load_image(p), model.config.image_resolution) for p in images])
    image = F.normalize(model.encode_image(pixels).double(), dim=-1)
    text = F.normalize(model.encode_text(tokenize(prompts)).double(), dim=-1)
    return (image @ text.T).argmax(-1).tolist()


@pytest.fixture
def sst2(tmp_path):
    root = tmp_path / "rendered-sst2"
    for split in ("train", "valid", "test"):
        for c, name in enumerate(("negative", "positive")):
            for i in range(3 if split == "test" else 1):
                noise_image(root / split / name / f"{10 * c + i}.png", 100 * c + i, (64, 24))
    return root


def test_rendered_sst2_in_its_released_layout(sst2, weights, capsys):
    task = read_rendered_sst2(sst2.parent)  # the folder holding rendered-sst2/, or rendered-sst2/ itself
    assert task.classes == ["negative", "positive"] and task.labels == [0, 0, 0, 1, 1, 1]
    assert [p.parent.name for p in task.image_paths] == ["negative"] * 3 + ["positive"] * 3
    assert len(read_rendered_sst2(sst2, "valid").labels) == 2
    code, out, err = run_eval(["sst2", "--weights", weights, "--data", sst2, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    got = json.loads(out)
    prompts = ["A picture of text with negative sentiment", "A picture of text with positive sentiment"]
    assert got["prompt"] == "A picture of text with {} sentiment" and got["images"] == 6
    predictions = zero_shot_by_hand(weights, task.image_paths, prompts)
    assert got["macro_f1"] == pytest.approx(macro_f1_by_hand(task.labels, predictions), abs=1e-12)


def test_rendered_sst2_without_a_class_folder_is_a_one_line_error(sst2, capsys):
    for image in (sst2 / "test" / "positive").iterdir():
        image.unlink()
    (sst2 / "test" / "positive").rmdir()
    assert eval_script.main(["sst2", "--data", str(sst2)]) == 2
    assert "no positive/ folder" in one_line_error(capsys, "eval.py")


def write_iso_table(path):
    """lukes/ISO-3166-Countries-with-Regional-Codes all/all.csv: its header, and names with commas quoted."""
    rows = [("Andorra", "AD", "AND", "020"), ("Bolivia (Plurinational State of)", "BO", "BOL", "068"),
            ("Korea, Republic of", "KR", "KOR", "410"), ("Namibia", "NA", "NAM", "516")]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "alpha-2", "alpha-3", "country-code", "iso_3166-2", "region", "sub-region",
                         "intermediate-region", "region-code", "sub-region-code", "intermediate-region-code"])
        for name, a2, a3, number in rows:
            writer.writerow([name, a2, a3, number, f"ISO 3166-2:{a2}", "", "", "", "", "", ""])
    return path


def test_country211_in_its_released_layout_named_from_the_iso_table(tmp_path, weights, capsys):
    root = tmp_path / "country211"
    for c, code in enumerate(("NA", "KR", "AD", "XK")):  # XK: not in the table
        for i in range(2):
            noise_image(root / "test" / code / f"{c}{i}.jpg", 10 * c + i)
    names = read_country_names(write_iso_table(tmp_path / "all.csv"))
    assert names["NA"] == "Namibia" and names["KR"] == "Korea, Republic of"  # "NA" is a code, not a missing value
    task = read_country211(root, names)
    capsys.readouterr()
    assert task.raw_classes == ["AD", "KR", "NA", "XK"]  # in the order of their codes
    assert task.classes == ["Andorra", "Korea, Republic of", "Namibia", "XK"]
    assert task.labels == [0, 0, 1, 1, 2, 2, 3, 3]
    code, out, err = run_eval(["country211", "--weights", weights, "--data", tmp_path, "--names", tmp_path / "all.csv",
                               "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "1 of 4 codes are not in the country table (XK)" in err
    got = json.loads(out)
    prompts = [f"A picture of the country of {name}" for name in task.classes]
    predictions = zero_shot_by_hand(weights, task.image_paths, prompts)
    assert got["macro_f1"] == pytest.approx(macro_f1_by_hand(task.labels, predictions), abs=1e-12)
    code, _, err = run_eval(["country211", "--weights", weights, "--data", tmp_path, "--names", tmp_path / "none.csv"],
                            capsys)
    assert code == 2 and "country table not found" in err


# ---- description length ----


def pearson_by_hand(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum()))


def test_length_over_a_concadia_split(tmp_path, weights, capsys):
    from clip_min.data.toy import make_toy_world

    world = make_toy_world(tmp_path / "toy", n_articles=12, transfer_per_class=1)
    code, out, err = run_eval(["length", "--weights", weights, "--data", world / "concadia", "--split", "train",
                               "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    examples, _ = read_concadia(world / "concadia", "train")
    cos = cosines(weights, [e.image_path for e in examples], [e.description for e in examples])
    got = json.loads(out)
    assert got["descriptions"] == len(examples)
    assert got["pearson"] == pytest.approx(pearson_by_hand([len(e.description) for e in examples], cos), abs=1e-6)


def test_length_over_the_rated_descriptions_leaves_out_the_attention_checks(tmp_path, weights, capsys):
    folder = tmp_path / "behavioral_data"
    rated = [("Food", "bread1", "bread.jpg", "A loaf of bread."), ("Food", "bread1", "bread.jpg",
             "A round brown loaf of bread on a wooden board, with a knife beside it."),
             ("Music", "gtr", "guitar.jpg", "A guitar."), ("Parks", "park2", "park.jpg", "A park with tall trees and a pond."),
             ("Parks", "park2", "park.jpg", "Trees.")]
    columns = ["context", "participant", "img_id", "description", "q_reconstructivity", "q_relevance", "q_irrelevance",
               "q_imgfit", "q_overall", "article_text"]
    folder.mkdir()
    with open(folder / "blv_data_criticaltrials.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for context, img_id, _, text in rated:
            writer.writerow({c: 3 for c in columns} | dict(context=context, participant="p1", img_id=img_id,
                                                          description=text, article_text="An article."))
    with open(folder / "all_descriptions.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["context", "img_id", "img_file", "description", "article_text"])
        writer.writerows([context, img_id, name, text, ""] for context, img_id, name, text in rated)
    for seed, name in enumerate(("bread.jpg", "guitar.jpg", "park.jpg")):
        noise_image(folder / "images" / name, seed)
    code, out, err = run_eval(["length", "--weights", weights, "--ratings", folder, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    kept = [r for r in rated if r[2] != "guitar.jpg"]  # the authors' recipe, real weights' default
    cos = cosines(weights, [folder / "images" / name for _, _, name, _ in kept], [text for *_, text in kept])
    got = json.loads(out)
    assert got["descriptions"] == 4 and "(authors recipe)" in got["over"]
    assert got["pearson"] == pytest.approx(pearson_by_hand([len(text) for *_, text in kept], cos), abs=1e-6)
    assert "left out: 1 rated descriptions of the images guitar, 640px-parc_agen" in err
