"""clip_min.train.config: the paper's defaults (Appendix B), the toy world's, and the checks where input enters."""

import pytest

import train
from clip_min.model import CLIPConfig
from clip_min.train.config import TrainConfig, check, check_against_model, defaults


def real(**fields) -> TrainConfig:
    """A config for real weights and data (not the toy world); the paths are only checked by check()."""
    return TrainConfig(weights="ViT-B-32.pt", data="concadia", **fields)


@pytest.mark.parametrize("objective, rank, lr", [("behavioral", 64, 5e-7), ("iit-das", 128, 1e-5), ("joint", 128, 1e-5)])
def test_paper_defaults_are_appendix_b(objective, rank, lr):
    config = defaults(real(objective=objective), text_layers=12, text_width=512)
    assert (config.lora_rank, config.lora_alpha, config.lr) == (rank, float(rank), lr)
    assert (config.layer, config.intervention_size, config.epochs) == (10, 256, 10)
    assert config.iit_samples == (None if objective == "behavioral" else 100_000)
    assert config.rotation_lr == (None if objective == "behavioral" else lr)
    assert config.checkpoint_every == config.eval_every


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
    assert train.parse_args(["--objective", "clip"]).finetune == "full"


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
