"""clip_min.train.config: the two recipes' defaults (Appendix B; the released runs), the toy world's, and the checks."""

import pytest

import train
from clip_min.cli.train import parse_args
from clip_min.model import CLIPConfig
from clip_min.train.config import TrainConfig, check, check_against_model, defaults


def real(**fields) -> TrainConfig:
    """A config for real weights and data (not the toy world); the paths are only checked by check()."""
    return TrainConfig(weights="ViT-B-32.pt", data="concadia", **fields)


@pytest.mark.parametrize("objective, rank, lr", [("behavioral", 64, 5e-7), ("iit-das", 128, 1e-5), ("joint", 128, 1e-5)])
def test_paper_defaults_are_appendix_b(objective, rank, lr):
    config = defaults(real(objective=objective, recipe="paper"), text_layers=12, text_width=512)
    assert (config.lora_rank, config.lora_alpha, config.lr) == (rank, float(rank), lr)
    assert (config.layer, config.intervention_size, config.epochs) == (10, 256, 10)
    assert config.iit_samples == (None if objective == "behavioral" else 100_000)
    assert config.rotation_lr == (None if objective == "behavioral" else lr)
    assert config.checkpoint_every == config.eval_every


@pytest.mark.parametrize("objective, finetune, rank, lr, batch", [
    ("behavioral", "full", 128, 5e-6, 6), ("behavioral", "lora", 128, 1e-5, 6),  # seeds_bft_fft.sh, seeds_bft_lora.sh
    ("iit-das", "full", 64, 1e-5, 12), ("iit-das", "lora", 64, 1e-5, 12),  # seeds_das_fft.sh, seeds_das_lora.sh
])
def test_authors_defaults_are_the_released_scripts_and_the_default_on_real_data(objective, finetune, rank, lr, batch):
    config = defaults(real(objective=objective, finetune=finetune), text_layers=12, text_width=512)
    assert config.recipe == "authors"
    assert (config.lora_rank, config.lora_alpha, config.lr, config.batch_size) == (rank, float(rank), lr, batch)
    assert (config.layer, config.intervention_size, config.epochs) == (10, 256, 10)
    assert (config.iit_rows, config.triplets, config.val_images) == ("one-way", "fixed", 5000)
    assert (config.logit_scale, config.orthogonal_map, config.prompt) == ("trained", "matrix_exp", "authors")


def test_the_toy_default_is_the_paper_recipe_and_authors_keeps_the_toy_rates():
    paper = defaults(TrainConfig(objective="behavioral"), text_layers=3, text_width=64)
    authors = defaults(TrainConfig(objective="behavioral", recipe="authors"), text_layers=3, text_width=64)
    assert (paper.recipe, paper.batch_size, paper.prompt, paper.orthogonal_map) == ("paper", 12, "paper", "cayley")
    assert (authors.recipe, authors.batch_size, authors.prompt) == ("authors", 6, "authors")
    assert (authors.lr, authors.lora_rank, authors.epochs) == (paper.lr, paper.lora_rank, paper.epochs) == (3e-4, 64, 1)


def test_toy_defaults_follow_the_model_shape_and_given_fields_win():
    config = defaults(TrainConfig(objective="iit-das", lr=0.5), text_layers=3, text_width=64)
    assert (config.layer, config.intervention_size, config.epochs, config.iit_samples) == (1, 32, 1, None)
    assert (config.lr, config.rotation_lr) == (0.5, 0.5)


def test_clip_objective_with_lora_is_refused_in_one_line(capsys):
    with pytest.raises(ValueError, match="pretraining trains every weight"):
        check(TrainConfig(objective="clip", finetune="lora"))
    assert train.main(["--objective", "clip", "--finetune", "lora"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["train.py: error: --objective clip --finetune lora: pretraining trains every weight; use --finetune full"]
    assert parse_args(["--objective", "clip"]).finetune == "full"


@pytest.mark.parametrize("k, ok", [(0, False), (1, True), (64, True), (65, False)])
def test_intervention_size_is_checked_once_against_the_model(k, ok):
    shape = CLIPConfig(text_width=64, text_layers=3)
    config = defaults(TrainConfig(objective="iit-das", intervention_size=k, lora_rank=8), 3, 64)
    check(config)  # k's range depends on the model, so only check_against_model judges it
    if ok:
        check_against_model(config, shape)
    else:
        with pytest.raises(ValueError, match=f"--intervention-size {k}: k is 1 to the text width 64"):
            check_against_model(config, shape)


def test_every_toy_default_fits_the_toy_model():
    from clip_min.train.config import TOY_DEFAULTS
    from clip_min.train.pretrain import TOY_CONFIG

    settings = [key for key in TOY_DEFAULTS if key != "all" and key[0] != "clip"]
    assert len(settings) == 6
    for objective, finetune in settings:
        config = defaults(TrainConfig(objective=objective, finetune=finetune), TOY_CONFIG.text_layers, TOY_CONFIG.text_width)
        check(config)
        check_against_model(config, TOY_CONFIG)  # raises if, say, the LoRA rank exceeds the toy's width
        assert finetune == "full" or config.lora_rank <= TOY_CONFIG.text_width
