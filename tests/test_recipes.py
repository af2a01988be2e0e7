"""The two recipes (docs/12-two-recipes.md): the paper's text and the authors' released runs.

Runs here train a tiny random CLIP on a tiny world in the real formats for a step or two.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import train
from tiny import TINY, TINY_OPENAI, random_tokens, tiny_model, tiny_world
from clip_min.attribution import gauss_legendre, integrated_gradients, mediated_integrated_gradients, token_attributions
from clip_min.data.transfer import TransferTask, class_prompts
from clip_min.losses import iit_loss_caption_base, iit_loss_rows
from clip_min.model import CLIP
from clip_min.report.correlation import correlate_tokens, correlate_with_norms
from clip_min.rotation import Rotation
from clip_min.tokenizer import tokenize
from clip_min.train import loop
from clip_min.train.config import TrainConfig, defaults
from clip_min.train.rows import draw_triplets, training_rows
from clip_min.weights import save_clip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "recipes", n_articles=40)


@pytest.fixture(scope="module")
def wide(setup):
    """A base whose text layers are 128 wide, so that both recipes' LoRA ranks (64, 128) fit."""
    torch.manual_seed(0)
    path = setup["root"] / "wide.pt"
    save_clip(CLIP(replace(TINY_OPENAI, text_width=128, text_heads=2)), path)
    return path


def run_train(setup, weights, out, *extra) -> int:
    argv = ["--weights", weights, "--data", setup["world"] / "concadia", "--device", "cpu", "--amp", "off",
            "--max-steps", "1", "--eval-every", "1", "--out", out, *extra]
    return train.main([str(a) for a in argv])


# What each recipe must write into config.json, typed from its sources (not read from config.py).
AUTHORS = {  # seeds_bft_*.sh, seeds_das_*.sh, run_iit_clip.py, finetune_clip.py
    "behavioral": dict(lr=1e-5, lora_rank=128, batch_size=6),
    "iit-das": dict(lr=1e-5, lora_rank=64, batch_size=12, iit_samples=100_000),
    "all": dict(iit_rows="one-way", triplets="fixed", val_images=5000, logit_scale="trained",
                orthogonal_map="matrix_exp", prompt="authors", epochs=10, layer=0, intervention_size=32,
                shuffle="once", eval_schedule="epoch", towers="text"),  # trainer.py: shuffle_train=False, fit
}
PAPER = {  # Appendix B
    "behavioral": dict(lr=5e-7, lora_rank=64, batch_size=12),
    "iit-das": dict(lr=1e-5, lora_rank=128, batch_size=12, iit_samples=100_000),
    "all": dict(iit_rows="pairs", triplets="stream", val_images=0, logit_scale="fixed", orthogonal_map="cayley",
                prompt="paper", epochs=10, layer=0, intervention_size=32, shuffle="every-epoch", eval_schedule="run",
                towers="text"),  # LoRA's; full fine-tuning: below
}


@pytest.mark.parametrize("recipe, expected", [(None, AUTHORS), ("authors", AUTHORS), ("paper", PAPER)])
@pytest.mark.parametrize("objective", ["behavioral", "iit-das"])
def test_each_recipe_reads_back_from_a_real_data_run(setup, wide, tmp_path, recipe, expected, objective):
    out = tmp_path / "run"
    given = [] if recipe is None else ["--recipe", recipe]
    site = ["--layer", "0", "--intervention-size", "32"]  # the tiny tower has 2 blocks
    assert run_train(setup, wide, out, "--objective", objective, *site, *given) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == recipe or (recipe is None and config["recipe"] == "authors")
    want = {**expected["all"], **expected[objective]}
    assert {name: config[name] for name in want} == want


def test_resume_refuses_another_recipe(setup, wide, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train(setup, wide, out, "--recipe", "paper") == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--max-steps", "2", "--recipe", "authors"]) == 2
    err = capsys.readouterr().err
    assert "--recipe was 'paper', now 'authors'" in err and len(err.strip().splitlines()) == 1


def seen_by(monkeypatch, name: str) -> list:
    """Record the arguments each call of loop.<name> (a loss) gets."""
    calls, real = [], getattr(loop, name)

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(loop, name, spy)
    return calls


@pytest.mark.parametrize("recipe, images", [("authors", 6), ("paper", 12)])
def test_a_behavioral_step_of_the_authors_is_6_images_12_texts(setup, wide, tmp_path, monkeypatch, recipe, images):
    calls = seen_by(monkeypatch, "behavioral_loss")
    assert run_train(setup, wide, tmp_path / "run", "--recipe", recipe, "--max-steps", "2") == 0
    assert [call["c_cap"].shape[0] for call in calls] == [images, images]


def test_an_authors_iit_step_is_12_one_way_rows(setup, tmp_path, monkeypatch):
    calls = seen_by(monkeypatch, "iit_loss_rows")
    assert run_train(setup, setup["base"], tmp_path / "run", "--objective", "iit-das", "--lora-rank", "8",
                     "--layer", "0", "--intervention-size", "32", "--iit-samples", "30", "--max-steps", "5") == 0
    assert [call["caption_base"].shape[0] for call in calls] == [12] * 5
    directions = torch.cat([call["caption_base"] for call in calls])
    # Rows shuffled one by one: batches mix both directions, not a triplet's two rows side by side.
    assert 0 < int(directions.sum()) < len(directions)


def test_the_fixed_triplet_draw_is_the_same_for_every_seed_and_another_draw_seed_differs():
    configs = [defaults(TrainConfig(objective="iit-das", recipe="authors", seed=seed, weights="w", data="d"), 12, 512)
               for seed in (0, 1, 7)]
    rows = [training_rows(config, 500) for config in configs]
    assert len(rows[0]) == 200_000  # 100,000 triplets, two one-way rows each
    for other in rows[1:]:
        assert torch.equal(other.image, rows[0].image) and torch.equal(other.caption_base, rows[0].caption_base)
    triplets = rows[0].image[::2]
    assert torch.equal(triplets, draw_triplets(500, 100_000, 42))
    assert not torch.equal(triplets, draw_triplets(500, 100_000, 43))
    assert triplets.unique().numel() == 500 and triplets.min() >= 0 and triplets.max() < 500  # with replacement
    assert torch.equal(rows[0].caption_base[:4], torch.tensor([True, False, True, False]))  # each triplet: Eq. 2, Eq. 3
    paper = defaults(TrainConfig(objective="iit-das", recipe="paper", weights="w", data="d"), 12, 512)
    assert torch.equal(training_rows(paper, 500).image, torch.arange(500))  # the stream: the split, reshuffled per pass


def test_one_way_rows_are_eqs_2_and_3_row_by_row():
    generator = torch.Generator().manual_seed(0)
    c_base, c_patched = torch.randn(6, generator=generator) * 3, torch.randn(6, generator=generator) * 3
    caption_base = torch.tensor([True, False, False, True, True, False])
    expected = 0.0
    for base, patched, is_caption in zip(c_base.double().tolist(), c_patched.double().tolist(), caption_base.tolist()):
        target = patched if is_caption else base  # Eq. 2 wants the intervened score, Eq. 3 the base's own
        expected += -(target - math.log(math.exp(base) + math.exp(patched)))
    got = iit_loss_rows(c_base=c_base, c_base_with_source=c_patched, caption_base=caption_base)
    assert float(got) == pytest.approx(expected / 6, abs=1e-6)
    everyone = torch.ones(6, dtype=torch.bool)
    assert float(iit_loss_rows(c_base=c_base, c_base_with_source=c_patched, caption_base=everyone)) == pytest.approx(
        float(iit_loss_caption_base(c_cap=c_base, c_cap_with_des=c_patched)), abs=1e-6)


# OpenAI's state-dict names of the text tower's parts; the vision tower's start with "visual.".
TEXT_TOWER = {"token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"}


def test_full_fine_tuning_trains_all_of_clip_in_the_paper_and_the_text_tower_with_the_temperature_in_the_authors(
        setup, tmp_path):
    from clip_min.train.runs import load_run

    base = torch.load(setup["base"], weights_only=True)
    moved = {}
    for recipe in ("authors", "paper"):
        out = tmp_path / recipe
        assert run_train(setup, setup["base"], out, "--recipe", recipe, "--finetune", "full", "--lr", "1e-3") == 0
        trained = torch.load(out / "weights.pt", weights_only=True)
        moved[recipe] = {name.split(".")[0] for name in base if not torch.equal(trained[name], base[name])}
        # The selected step (here the last) holds every trained tensor and loads with them, none refused as untrained.
        loaded = load_run(out).model.state_dict()
        assert all(torch.equal(loaded[name], trained[name]) for name in trained)
    # finetune_clip.py's module is the text tower and logit_scale; the paper: "all the parameters of CLIP".
    assert moved == {"authors": TEXT_TOWER | {"logit_scale"}, "paper": TEXT_TOWER | {"logit_scale", "visual"}}
    assert json.loads((tmp_path / "paper" / "config.json").read_text())["towers"] == "both"
    assert run_train(setup, setup["base"], tmp_path / "lora", "--recipe", "paper") == 0  # LoRA: the text tower's
    assert json.loads((tmp_path / "lora" / "config.json").read_text())["towers"] == "text"


RECIPE_FIELDS = ("recipe", "iit_rows", "triplets", "val_images", "logit_scale", "orthogonal_map")


def written_before(out, fields) -> None:
    """Make the run in ``out`` look as if written before ``fields`` existed: gone from its
    config.json and from its checkpoint's saved configuration (the checkpoint's digest redone)."""
    from clip_min.train import checkpoint

    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in fields}))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state.pop("sha256")
    state["run"]["config"] = {k: v for k, v in state["run"]["config"].items() if k not in fields}
    state["sha256"] = checkpoint.digest(state)
    torch.save(state, out / "checkpoint.pt")


def test_a_run_from_before_the_recipes_resumes_as_the_paper_recipe(setup, wide, tmp_path, capsys):
    """Its config.json and checkpoint lack the recipe's fields; what it did then is the paper's recipe now."""
    out = tmp_path / "old"
    assert run_train(setup, wide, out, "--recipe", "paper", "--objective", "iit-das", "--iit-samples", "12",
                     "--layer", "0", "--intervention-size", "32") == 0
    written_before(out, RECIPE_FIELDS)
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--max-steps", "2"]) == 0, capsys.readouterr().err
    resumed = json.loads((out / "config.json").read_text())
    assert {k: resumed[k] for k in RECIPE_FIELDS} == dict(recipe="paper", iit_rows="pairs", triplets="stream",
                                                          val_images=0, logit_scale="fixed", orthogonal_map="cayley")


def test_an_authors_run_from_before_the_data_order_and_schedule_were_settings_resumes_as_it_trained(setup, tmp_path,
                                                                                                   capsys):
    out, new_fields = tmp_path / "old", ("shuffle", "eval_schedule")
    assert run_train(setup, setup["base"], out, "--recipe", "authors", "--lora-rank", "8") == 0
    written_before(out, new_fields)
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--max-steps", "2"]) == 0, capsys.readouterr().err
    resumed = json.loads((out / "config.json").read_text())
    # Then every run reshuffled each epoch and counted --eval-every over the run, the authors' recipe too.
    assert (resumed["recipe"], resumed["shuffle"], resumed["eval_schedule"]) == ("authors", "every-epoch", "run")


def test_a_run_reloads_its_rotation_with_the_map_it_trained_with(setup, tmp_path):
    from clip_min.train.runs import load_run

    out = tmp_path / "run"
    assert run_train(setup, setup["base"], out, "--objective", "iit-das", "--lora-rank", "8", "--layer", "0",
                     "--intervention-size", "32", "--iit-samples", "12", "--rotation-lr", "0.1", "--max-steps", "3") == 0
    state = torch.load(out / "adapters.pt", weights_only=True)["rotation"]
    by_hand = {}
    for name in ("matrix_exp", "cayley"):
        rotation = Rotation(64, name)
        rotation.load_state_dict(state)
        by_hand[name] = rotation.R.detach()
    # The maps agree to second order in the free parameter; a fast-moving rotation tells them apart.
    assert (by_hand["matrix_exp"] - by_hand["cayley"]).abs().max() > 1e-3  # else the check below proves nothing
    assert torch.allclose(load_run(out, step="last").rotation.R.detach(), by_hand["matrix_exp"], atol=1e-6)


def test_the_authors_prompts_use_each_tasks_template_and_raw_names():
    food = TransferTask("food", ["apple pie"], [], [], layout="food101", raw_classes=["apple_pie"])
    cifar = TransferTask("cifar", ["aquarium fish"], [], [], layout="cifar100", raw_classes=["aquarium_fish"])
    imagenet = TransferTask("imagenet", ["tench"], [], [], layout="imagenet")
    assert class_prompts(food, "authors") == ["A picture of apple_pie"]
    assert class_prompts(cifar, "authors") == ["a photo of a aquarium_fish"]
    assert class_prompts(imagenet, "authors") == ["A picture of tench"]
    assert class_prompts(food, "paper") == ["An image of apple pie"]


# ---- Table 3 ----


def test_the_token_unit_is_the_mean_per_unique_token_correlated_across_tokens():
    # Every word here is one BPE piece, so the tokens are the words; "dog" and "red" come back.
    texts = ["a red dog on grass", "the dog sat", "red sky over a red barn", "grass and sky"]
    norms = {"red": 5.1, "dog": 6.3, "grass": 4.0, "sky": 3.2, "barn": 5.9, "sat": 2.0}
    generator = torch.Generator().manual_seed(1)
    tokens, by_hand = [], {}
    for text in texts:
        ids = tokenize(text)[0]
        values = torch.zeros(77)
        n = len(text.split())
        values[: n + 2] = torch.randn(n + 2, generator=generator)  # start, the words, end
        tokens += token_attributions(ids, values)
        for word, value in zip(text.split(), values[1 : n + 1].double().tolist()):
            by_hand.setdefault(word, []).append(value)
    assert [t for t, _ in tokens] == " ".join(texts).split()  # "</w>" stripped, start and end left out
    rated = sorted(w for w in by_hand if w in norms)
    x = np.array([np.mean(by_hand[w]) for w in rated], dtype=np.float64)
    y = np.array([norms[w] for w in rated], dtype=np.float64)
    pearson = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    got = correlate_tokens(tokens, norms)
    assert got.n == 6 and got.pearson == pytest.approx(pearson, abs=1e-9)
    # Pooled occurrences (the word unit) weigh "red" three times and "dog" twice: another number.
    assert correlate_with_norms(tokens, norms).pearson != pytest.approx(pearson, abs=1e-3)


def test_gauss_legendre_points_match_numpy_leggauss():
    x, w = np.polynomial.legendre.leggauss(50)  # on [-1, 1]
    t, weights = gauss_legendre(50)
    assert t.dtype == torch.float64
    assert np.allclose(t.numpy(), (x + 1) / 2, atol=1e-14, rtol=0)
    assert np.allclose(weights.numpy(), w / 2, atol=1e-14, rtol=0)


def test_gauss_legendre_ig_with_the_eos_baseline_is_complete():
    model = tiny_model().eval()
    tokens = random_tokens(3, seed=4)
    image = torch.randn(3, TINY.embed_dim, generator=torch.Generator().manual_seed(2))
    ig = integrated_gradients(model, image, tokens, steps=50, rule="gauss-legendre", baseline="eos")
    gap = ig.attributions.sum(-1) - (ig.score - ig.baseline_score)
    assert torch.allclose(gap, torch.zeros(3), atol=1e-3 * float((ig.score - ig.baseline_score).abs().max()))
    zero = integrated_gradients(model, image, tokens, steps=50, rule="gauss-legendre", baseline="zero")
    assert not torch.allclose(zero.baseline_score, ig.baseline_score)  # the baseline is another text
    eot = tokens.argmax(-1)
    for row in range(3):  # start and end are the same in x and x': no attribution
        assert ig.attributions[row, 0] == 0 and ig.attributions[row, eot[row]] == 0


def test_the_authors_window_through_and_around_still_add_up():
    model = tiny_model().eval()
    tokens = random_tokens(2, seed=5)
    image = torch.randn(2, TINY.embed_dim, generator=torch.Generator().manual_seed(3))
    R = Rotation(TINY.text_width).R.detach()
    options = dict(steps=16, rule="gauss-legendre", baseline="eos")
    total = integrated_gradients(model, image, tokens, **options).attributions
    parts = [mediated_integrated_gradients(model, image, tokens, R, 1, 32, around=around, start=16, **options)
             for around in (False, True)]
    assert torch.allclose(parts[0].attributions + parts[1].attributions, total, atol=1e-5)
    trained = mediated_integrated_gradients(model, image, tokens, R, 1, 32, start=0, **options)
    assert not torch.allclose(trained.attributions, parts[0].attributions)  # [16, 48) is another subspace
    with pytest.raises(ValueError, match="window"):
        mediated_integrated_gradients(model, image, tokens, R, 1, 32, start=40, **options)


def test_the_authors_sample_is_both_texts_of_images_with_a_listed_word_in_each():
    from clip_min.data.concadia import Example
    from clip_min.report.table3 import authors_sample, window_start

    def example(i, caption, description):
        return Example(image_path=f"{i}.jpg", description=description, caption=caption, context="", article_id="a",
                       filename=f"{i}.jpg")

    norms = {"imageability": {"dog": 6.0, "sky": 5.0}, "concreteness": {"dog": 6.1, "sky": 4.0}}
    examples = [example(0, "a dog", "the sky"), example(1, "a Dog", "the sky"),  # "Dog": case counts
                example(2, "a dog.", "the sky"), example(3, "sky", "dog"),  # "dog." is not "dog"
                example(4, "no", "dog"), example(5, "dog sky", "sky dog"), example(6, "a dog", "sky")]
    picked = authors_sample(examples, norms, n=3, seed=42)
    images = [e.filename for _, e in picked]
    assert [k for k, _ in picked] == ["description"] * 3 + ["caption"] * 3 and images[:3] == images[3:]
    assert set(images) <= {"0.jpg", "3.jpg", "5.jpg", "6.jpg"}
    assert [e.filename for _, e in authors_sample(examples, norms, n=3, seed=42)] == images
    assert window_start("authors", 256, 512) == 128 and window_start("trained", 256, 512) == 0


def test_the_searches_run_appendix_bs_grids():
    from clip_min.report.search import configurations

    behavioral = configurations("behavioral", toy=False, objective="behavioral")
    assert sorted({c["lr"] for c in behavioral}) == sorted([1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6, 1e-6, 5e-7])
    assert len(behavioral) == 8 * 4 and {c["l2"] for c in behavioral} == {0.0, 0.1, 0.01, 0.001}
    iit = configurations("iit-das", toy=False, objective="iit-das")
    assert len(iit) == 3 * 3 * 4 and {c["lr"] for c in iit} == {1e-5, 5e-6, 1e-6}
    assert len(configurations("lora", toy=False, objective="iit-das")) == 5 * 3 * 3
    joint = configurations("joint", toy=False, objective="behavioral", finetune="full")
    assert [c["joint_alpha"] for c in joint] == [0.2, 0.3, 0.5, 0.7, 0.8]
    assert {(c["objective"], c["finetune"]) for c in joint} == {("joint", "full")}


def test_an_authors_epoch_has_the_released_runs_step_counts():
    # finetune_clip.py: 77,534 training images in batches of 6 -> 12,923 steps an epoch;
    # run_iit_clip.py: 100,000 triplets, 200,000 one-way rows in batches of 12 -> 16,667.
    real = dict(weights="w", data="d", recipe="authors", epochs=1)
    behavioral = defaults(TrainConfig(objective="behavioral", **real), 12, 512)
    iit = defaults(TrainConfig(objective="iit-das", **real), 12, 512)
    assert loop.total_steps(behavioral, 77_534) == 12_923
    assert loop.total_steps(iit, 77_534) == 16_667
    paper = defaults(TrainConfig(objective="behavioral", weights="w", data="d", recipe="paper", epochs=1), 12, 512)
    assert loop.total_steps(paper, 77_534) == 6_462  # 12 images a batch: half the authors' steps


def table3_row(printed: str, model: str, mediation: str) -> list[str]:
    """The cells of one row of table3's markdown output."""
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [model, mediation]:
            return cells[2:]
    raise AssertionError(f"no row {model} / {mediation} in:\n{printed}")


def test_table3_follows_the_runs_recipe_and_the_flags(setup, tmp_path, capsys):
    from tiny import run_eval

    iit, behavioral = tmp_path / "iit", tmp_path / "behavioral"
    assert run_train(setup, setup["base"], iit, "--objective", "iit-das", "--lora-rank", "8", "--layer", "0",
                     "--intervention-size", "32", "--iit-samples", "12") == 0
    assert run_train(setup, setup["base"], behavioral, "--lora-rank", "8", "--layer", "0",
                     "--intervention-size", "32") == 0
    capsys.readouterr()
    world = setup["world"]
    common = ["table3", "--runs", iit, behavioral, "--norms", world / "norms" / "glasgow_norms.csv", "--n", "4",
              "--steps", "4", "--device", "cpu"]
    code, printed, err = run_eval(common, capsys)  # the runs' recipe: the authors'
    assert code == 0, err
    assert "each unique BPE token's mean attribution of both texts of" in printed
    assert "norm words exact; integrated gradients: gauss-legendre, 4 points, baseline eos" in printed
    assert "mediation window: authors, rotated [k/2, 3k/2)" in printed
    assert "around it: the end-of-text state outside the window" in printed
    assert "models without a rotation: the identity rotation" in printed and "each run's last step" in printed
    for model in ("CLIP (base)", "Behavioral (LoRA)", "IIT-DAS (LoRA)"):  # every model, through and around
        for mediation in ("through the site", "around it"):
            assert all(cell != "-" for cell in table3_row(printed, model, mediation))
    code, printed, err = run_eval(common + ["--recipe", "paper", "--window", "authors"], capsys)
    assert code == 0, err
    assert "every rated word occurrence of 4 descriptions and 4 captions" in printed
    assert "norm words folded; integrated gradients: trapezoid, 4 points, baseline zero" in printed
    assert "around it: every path that avoids the window" in printed and "each run's selected step" in printed
    assert table3_row(printed, "Behavioral (LoRA)", "through the site") == ["-", "-"]  # nothing borrowed
    code, printed, err = run_eval(common + ["--recipe", "paper", "--rotation-from", iit], capsys)
    assert code == 0, err
    assert all(cell != "-" for cell in table3_row(printed, "Behavioral (LoRA)", "through the site"))  # borrowed
    code, printed, err = run_eval(common + ["--rotation-from", iit], capsys)  # one command line for both recipes
    assert code == 0 and "--rotation-from is not used: the authors recipe" in err, err
    assert "models without a rotation: the identity rotation" in printed
    code, printed, err = run_eval(common + ["--rotation-from", iit, "--unrotated", "identity"], capsys)
    assert code == 2 and "--rotation-from with --unrotated identity" in err


def test_table3_on_the_toy_world_in_the_readmes_form(setup, tmp_path, capsys, monkeypatch):
    """A toy run records the toy world's folder as its data: table3 then needs only --runs and --rotation-from,
    and takes the toy world's two norms (imageability and Brysbaert-style concreteness) and its 64-point integral."""
    from tiny import run_eval
    from clip_min.report.table3 import TOY_STEPS
    from clip_min.train import pipeline

    world = setup["world"]
    monkeypatch.setenv("CLIP_MIN_CACHE", str(world.parent))  # so the toy world is this tiny one, at toy_world_dir()
    monkeypatch.setattr(pipeline, "toy_world", lambda: (world, sorted(str(p) for p in (world / "transfer").iterdir())))
    iit, behavioral = tmp_path / "iit", tmp_path / "behavioral"
    paper = ("--recipe", "paper", "--lora-rank", "8", "--layer", "0", "--intervention-size", "32")
    assert run_train(setup, setup["base"], iit, "--objective", "iit-das", "--iit-samples", "12", *paper) == 0
    assert run_train(setup, setup["base"], behavioral, *paper) == 0
    capsys.readouterr()
    code, printed, err = run_eval(["table3", "--runs", behavioral, iit, "--rotation-from", iit, "--n", "4",
                                   "--device", "cpu"], capsys)
    assert code == 0, err
    assert printed.splitlines()[0] == "| model | mediation | imageability r | concreteness r |"
    assert f"integrated gradients: trapezoid, {TOY_STEPS} points, baseline zero" in printed and TOY_STEPS == 64
    assert all(cell != "-" for cell in table3_row(printed, "Behavioral (LoRA)", "through the site"))
    code, printed, err = run_eval(["table3", "--runs", behavioral, "--steps", "3", "--n", "4", "--device", "cpu"], capsys)
    assert code == 0 and "trapezoid, 3 points" in printed, err  # --steps still decides


def test_table3_sites_identity_for_models_without_a_rotation_and_the_recipes_step(setup, tmp_path):
    from clip_min.report.table3 import RECIPE_OPTIONS, Options, entries_for_runs

    iit, behavioral = tmp_path / "iit", tmp_path / "behavioral"
    assert run_train(setup, setup["base"], iit, "--objective", "iit-das", "--lora-rank", "8", "--layer", "0",
                     "--intervention-size", "32", "--iit-samples", "12", "--recipe", "authors") == 0
    assert run_train(setup, setup["base"], behavioral, "--lora-rank", "8", "--layer", "1",
                     "--intervention-size", "16", "--recipe", "authors") == 0
    authors = Options(**RECIPE_OPTIONS["authors"])
    base, iit_entry, behavioral_entry = entries_for_runs([iit, behavioral], None, "cpu", authors)
    R, layer, k = base.site  # the base takes the first run's block and k
    assert torch.equal(R, torch.eye(64)) and (layer, k) == (0, 32)
    R, layer, k = behavioral_entry.site  # its own
    assert torch.equal(R, torch.eye(64)) and (layer, k) == (1, 16)
    R, layer, k = iit_entry.site  # a trained rotation stays the run's own
    assert not torch.allclose(R, torch.eye(64)) and (layer, k) == (0, 32)
    assert iit_entry.loaded.step == "last" and behavioral_entry.loaded.step == "last"
    paper = Options(**RECIPE_OPTIONS["paper"])
    base, iit_entry, behavioral_entry = entries_for_runs([iit, behavioral], None, "cpu", paper)
    assert base.site is None and behavioral_entry.site is None
    assert isinstance(iit_entry.loaded.step, int)  # Appendix C's selected step
    borrowed = entries_for_runs([behavioral], iit, "cpu", replace(paper, unrotated="borrowed"))
    assert torch.equal(borrowed[1].site[0], iit_entry.site[0])


# ---- data order, precision and evaluation timing (docs/12, rows 5, 6 and 8) ----------------------


def batches_and_evaluations(monkeypatch) -> tuple[list, list]:
    """Record each step's global batch (row indices) and each evaluation's step, as the loop hands them on."""
    batches, evaluated = [], []
    batch_loss, evaluate = loop.batch_loss, loop.evaluate

    def seen_batch(run, rows):
        batches.append(rows.clone())
        return batch_loss(run, rows)

    def seen_evaluation(run, step):
        evaluated.append(step)
        return evaluate(run, step)

    monkeypatch.setattr(loop, "batch_loss", seen_batch)
    monkeypatch.setattr(loop, "evaluate", seen_evaluation)
    return batches, evaluated


def two_epochs(setup, out, recipe: str, *extra) -> int:
    """Two epochs of a behavioral LoRA run in batches of 12 images, evaluated with N = 5."""
    return run_train(setup, setup["base"], out, "--recipe", recipe, "--lora-rank", "8", "--batch-size", "12",
                     "--epochs", "2", "--max-steps", "1000", "--eval-every", "5", *extra)


def released_evaluation_steps(steps_per_epoch: int, epochs: int, every: int) -> list[int]:
    """trainer.py's fit: an evaluation after the batch whose batch_num (from 0 in each epoch) is a multiple of N."""
    steps, done = [], 0
    for _ in range(epochs):
        for batch_num in range(steps_per_epoch):
            done += 1  # the optimizer step comes before the evaluation in fit's loop body
            if batch_num % every == 0:
                steps.append(done)
    return steps


@pytest.mark.parametrize("recipe", ["authors", "paper"])
def test_the_authors_read_one_shuffle_in_every_epoch_and_the_paper_reshuffles(setup, tmp_path, monkeypatch, recipe):
    batches, _ = batches_and_evaluations(monkeypatch)
    assert two_epochs(setup, tmp_path / "run", recipe) == 0
    n = json.loads((tmp_path / "run" / "summary.json").read_text())["train_images"]
    per_epoch = math.ceil(n / 12)
    assert len(batches) == 2 * per_epoch
    first, second = torch.cat(batches[:per_epoch]), torch.cat(batches[per_epoch:])
    for order in (first, second):
        assert torch.equal(order.sort().values, torch.arange(n))  # each epoch sees every image once
    assert not torch.equal(first, torch.arange(n))  # shuffled, not the split's order
    assert torch.equal(first, second) == (recipe == "authors")


@pytest.mark.parametrize("recipe", ["authors", "paper"])
def test_the_authors_evaluate_after_the_first_batch_of_each_epoch_and_every_nth_after_it(setup, tmp_path, monkeypatch,
                                                                                       recipe):
    _, evaluated = batches_and_evaluations(monkeypatch)
    out = tmp_path / "run"
    assert two_epochs(setup, out, recipe) == 0
    n = json.loads((out / "summary.json").read_text())["train_images"]
    per_epoch = math.ceil(n / 12)
    assert per_epoch % 5 not in (0, 1)  # else the two schedules could agree in the second epoch
    last = 2 * per_epoch
    if recipe == "authors":
        expected = released_evaluation_steps(per_epoch, 2, 5)
    else:
        expected = list(range(5, last, 5))
    expected = [0, *expected, *([last] if expected[-1] != last else [])]  # the base, and the last step always
    assert evaluated == expected
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == expected


def test_the_released_runs_evaluate_26_times_an_epoch_from_its_first_batch():
    # finetune_clip.py: 12,923 batches an epoch, num_iter_per_val 500, 10 epochs.
    config = defaults(TrainConfig(objective="behavioral", weights="w", data="d", recipe="authors"), 12, 512)
    per_epoch = loop.steps_per_epoch(config, 77_534)
    steps = [s for s in range(1, loop.total_steps(config, 77_534) + 1) if loop.evaluates_after(s, config, per_epoch)]
    assert steps == released_evaluation_steps(12_923, 10, 500)
    assert steps[:3] == [1, 501, 1001] and steps[25:28] == [12_501, 12_924, 13_424] and len(steps) == 260
    paper = defaults(TrainConfig(objective="behavioral", weights="w", data="d", recipe="paper"), 12, 512)
    assert [s for s in range(1, 1501) if loop.evaluates_after(s, paper, 6_462)] == [500, 1000, 1500]


def test_a_resumed_authors_run_evaluates_and_reads_the_batches_of_one_never_stopped(setup, tmp_path, monkeypatch):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    options = ("--checkpoint-every", "12", "--lora-dropout", "0.1")  # dropout: the generators must come back too
    batches, evaluated = batches_and_evaluations(monkeypatch)
    assert two_epochs(setup, whole, "authors", *options) == 0
    per_epoch = math.ceil(json.loads((whole / "summary.json").read_text())["train_images"] / 12)
    whole_batches, whole_evaluations = list(batches), list(evaluated)
    stop_at = per_epoch + 1  # the evaluation after the first batch of the second epoch
    recording = loop.evaluate

    def evaluate_then_interrupt(run, step):  # Ctrl-C right after that evaluation
        recording(run, step)
        if step == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate", evaluate_then_interrupt)
    batches.clear(), evaluated.clear()
    assert two_epochs(setup, stopped, "authors", *options) == 130
    saved = torch.load(stopped / "checkpoint.pt", weights_only=True)["progress"]["step"]
    assert saved == 12 < stop_at  # steps 13 .. stop_at are taken, and evaluated, again
    monkeypatch.setattr(loop, "evaluate", recording)
    batches.clear(), evaluated.clear()
    assert train.main(["--resume", str(stopped)]) == 0
    # It evaluates where the whole run did, the first batch of the second epoch included, and logs each once.
    assert evaluated == [s for s in whole_evaluations if s > saved]
    got, want = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (stopped, whole))
    assert [r["step"] for r in got] == [r["step"] for r in want] == whole_evaluations
    for a, b in zip(got, want):
        for key in ("loss", "val_accuracy", "test_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    summaries = [json.loads((run / "summary.json").read_text()) for run in (stopped, whole)]
    assert summaries[0]["resumes"] == 1 and summaries[0]["selected_step"] == summaries[1]["selected_step"]
    # The resumed steps read the whole run's batches: in the second epoch, the first epoch's one shuffle again.
    assert len(batches) == 2 * per_epoch - saved
    assert all(torch.equal(a, b) for a, b in zip(batches, whole_batches[saved:]))
    assert torch.equal(torch.cat(batches[per_epoch - saved:]), torch.cat(whole_batches[:per_epoch]))


def autocast_dtype(autocast):
    """What an autocast factory computes in on the CPU: its dtype, or False without autocast."""
    with autocast():
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")


def precision_seen(monkeypatch) -> dict:
    """Whether autocast is on, and its dtype, in each training step's loss and each split's evaluation."""
    seen = dict(steps=set(), evaluations=set())
    step_loss, split_accuracy = loop.step_loss, loop.split_accuracy

    def step(*args, **kwargs):
        seen["steps"].add(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return step_loss(*args, **kwargs)

    def evaluation(model, split, device, autocast):
        seen["evaluations"].add(autocast_dtype(autocast))
        return split_accuracy(model, split, device, autocast)

    monkeypatch.setattr(loop, "step_loss", step)
    monkeypatch.setattr(loop, "split_accuracy", evaluation)
    return seen


@pytest.mark.parametrize("recipe, amp, expected", [("authors", None, ("off", False)),
                                                   ("authors", "bf16", ("bf16", torch.bfloat16)),
                                                   ("paper", None, ("auto", False))])  # auto: off on a CPU
def test_the_authors_train_and_evaluate_in_fp32_unless_amp_is_given(setup, tmp_path, monkeypatch, recipe, amp, expected):
    seen = precision_seen(monkeypatch)
    out = tmp_path / "run"
    argv = ["--weights", setup["base"], "--data", setup["world"] / "concadia", "--device", "cpu", "--recipe", recipe,
            "--lora-rank", "8", "--max-steps", "2", "--eval-every", "1", "--out", out, *(["--amp", amp] if amp else [])]
    assert train.main([str(a) for a in argv]) == 0
    recorded, autocast = expected
    assert json.loads((out / "config.json").read_text())["amp"] == recorded
    # On CUDA, where the recipes part, "auto" is bf16 (fp16 without it): device.mixed_precision.
    assert seen == dict(steps={autocast}, evaluations={autocast})


def test_eval_py_measures_a_run_in_the_precision_it_trained_in_unless_amp_is_given(setup, tmp_path):
    from argparse import Namespace

    from clip_min.report.session import open_model

    runs = {}
    for amp in ("bf16", "off"):
        runs[amp] = tmp_path / amp
        assert run_train(setup, setup["base"], runs[amp], "--lora-rank", "8", "--amp", amp) == 0

    def measured(run, amp=None, weights=None):
        args = Namespace(weights=weights, run=None if run is None else str(run), step="last", device="cpu", amp=amp)
        return autocast_dtype(open_model(args).autocast)

    assert measured(runs["bf16"]) == torch.bfloat16 and measured(runs["off"]) is False
    assert measured(runs["bf16"], amp="off") is False and measured(runs["off"], amp="bf16") == torch.bfloat16
    assert measured(None, weights=str(setup["base"])) is False  # plain weights: auto, which is off on a CPU
