"""clip_min.train.toybase: the shipped toy base is the file its hash names, unpacks to what was trained, and starts near chance."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_min.data.concadia import read_concadia
from clip_min.data.toy import make_toy_world
from clip_min.model import CLIPConfig
from clip_min.tokenizer import tokenize
from clip_min.train import toybase
from clip_min.train.config import TrainConfig
from clip_min.train.pretrain import evaluate_base, pretrain
from clip_min.weights import WeightsError, load_clip

ROOT = Path(__file__).resolve().parents[1]
TINY = CLIPConfig(embed_dim=16, image_resolution=16, vision_patch_size=8, vision_width=64, vision_layers=1,
                  vision_heads=1, text_width=64, text_layers=2, text_heads=1)


def tasks_of(world: Path) -> list[str]:
    return sorted(str(p) for p in (world / "transfer").iterdir() if p.is_dir())


def test_the_shipped_base_matches_its_hash_and_is_small():
    data = toybase.TOY_BASE_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == toybase.TOY_BASE_SHA256
    assert len(data) < 3_000_000  # the whole fp16 model would be 7.5 MB, mostly unused token rows


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A tiny base pretrained for one epoch with weight decay, its weights, its packed file and its world."""
    tmp = tmp_path_factory.mktemp("packed")
    world = make_toy_world(tmp / "world", n_articles=12, transfer_per_class=2)
    config = TrainConfig(objective="clip", finetune="full", lr=1e-3, l2=0.1, epochs=1, batch_size=16, out=str(tmp / "base"))
    pretrain(config, None, world / "concadia", tasks_of(world), model_config=TINY)
    toybase.pack(tmp / "base" / "weights.pt", tmp / "packed.pt", TINY, seed=0)
    return tmp / "base" / "weights.pt", tmp / "packed.pt", world


def test_unpacking_gives_back_the_pretrained_weights_in_fp16(packed):
    weights, file, _ = packed
    trained = torch.load(weights, map_location="cpu", weights_only=True)
    unpacked = toybase.unpack(file, hashlib.sha256(file.read_bytes()).hexdigest())
    assert unpacked.keys() == trained.keys()
    rows = torch.load(file, map_location="cpu", weights_only=True)["token_rows"]
    for name, tensor in trained.items():
        assert unpacked[name].dtype == torch.float32
        expected = tensor.half().float()
        if name == toybase.TOKENS:  # the rows left out are the initialisation, exactly as training left them
            expected = tensor.clone()
            expected[rows] = tensor[rows].half().float()
        assert torch.equal(unpacked[name], expected), name


def test_only_the_rows_of_the_training_texts_tokens_are_stored(packed):
    # Weight decay on the token embedding would move every row, and the file would hold all 49,408.
    _, file, world = packed
    examples, _ = read_concadia(world / "concadia", "train")
    tokens = tokenize([e.description for e in examples] + [e.caption for e in examples], 77, truncate=True)
    used = set(tokens[tokens != 0].tolist())  # 0 pads; no toy text has the token "!"
    stored = torch.load(file, map_location="cpu", weights_only=True)["token_rows"]
    assert set(stored.tolist()) == used


def test_a_changed_file_is_refused_in_one_line(packed, tmp_path):
    _, file, _ = packed
    data = bytearray(file.read_bytes())
    expected = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 1
    (tmp_path / "changed.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or was changed") as err:
        toybase.unpack(tmp_path / "changed.pt", expected)
    assert "\n" not in str(err.value)


def test_the_cached_base_is_unpacked_once(tmp_path, capsys):
    weights = toybase.toy_base(tmp_path)
    assert "unpacking the toy base" in capsys.readouterr().out
    stamp = weights.stat().st_mtime_ns
    assert toybase.toy_base(tmp_path) == weights and weights.stat().st_mtime_ns == stamp
    assert "unpacking" not in capsys.readouterr().out
    model = load_clip(weights)
    shipped = toybase.unpack(toybase.TOY_BASE_FILE, toybase.TOY_BASE_SHA256)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name


UNPACK_DIGEST = """
import hashlib, torch
from clip_min.train import toybase
state = toybase.unpack(toybase.TOY_BASE_FILE, toybase.TOY_BASE_SHA256)
print(hashlib.sha256(b"".join(state[name].numpy().tobytes() for name in sorted(state))).hexdigest())
"""


def test_the_unpacked_base_is_the_same_under_one_and_two_threads():
    # The rows the file leaves out come from the seeded initialisation: its random draws must not
    # depend on the thread count.
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", UNPACK_DIGEST], env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_the_shipped_base_starts_near_chance_and_names_colours_and_backgrounds(tmp_path):
    """On the default toy world, as CLIP on Concadia: no preference, but zero-shot transfer well above chance."""
    world = make_toy_world(tmp_path / "toy")
    result = evaluate_base(toybase.toy_base(world), world / "concadia", tasks_of(world),
                           TrainConfig(objective="clip", finetune="full", out=str(tmp_path / "eval")))
    assert 0.40 <= result["concadia_accuracy"] <= 0.60
    for task, chance in result["transfer_chance"].items():
        assert result["transfer_f1"][task] > 2 * chance, task


def test_a_toy_run_finds_its_base_again_after_the_cache_was_emptied(tmp_path, monkeypatch):
    """The toy base is unpacked into the cache, which a new toy world or a cleared cache empties; a run trained
    on it loads again, on the same bytes (its base is checked by content), instead of calling its base gone."""
    from clip_min.files import content_fingerprint
    from clip_min.train import pipeline, runs

    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))
    world = tmp_path / "cache" / "toy"
    monkeypatch.setattr(pipeline, "toy_world", lambda: (world, []))
    base = toybase.toy_base(world)
    config = {"objective": "behavioral", "finetune": "full", "weights": str(base), "weights_id": content_fingerprint(base)}
    for name in ("weights.pt", "shipped.json"):
        (world / "base" / name).unlink()
    model, weights_id = runs._base_model(tmp_path, config, "cpu")
    assert base.is_file() and weights_id == config["weights_id"]
    other = dict(config, weights=str(tmp_path / "elsewhere.pt"))  # any other missing base is still an error
    with pytest.raises(runs.RunError, match="are gone"):
        runs._base_model(tmp_path, other, "cpu")
