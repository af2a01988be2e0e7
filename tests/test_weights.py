"""clip_min.weights: the same random weights through every format must give the reference's features.

References: OpenAI's own clip/model.py and clip/simple_tokenizer.py (loaded by file path from the
openai-clip package, whose __init__ needs torchvision) and Hugging Face's CLIPModel. The models
have ViT-B/32 shapes and random weights; each is built once per module because that is the slow part.
"""

import copy
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from clip_min.model import CLIP, CLIPConfig
from clip_min.weights import WeightsError, config_from_state_dict, load_clip, save_clip

# Tracing OpenAI's model to make TorchScript archives warns about its Python-side shape checks.
pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]
# max |ours - reference| over the features, all in fp32. Features of size ~1 after 12 blocks: we measured
# rounding up to 3.1e-6 (HF's image path); kept this tight so that a small slip (an eps, a scale) still shows.
ATOL = 1e-5
SENTENCES = [
    "A photo depicts a red bicycle leaning against a brick wall.",
    "Two children play chess on a wooden table in a sunny park while their grandfather watches.",
    "Map of the county.",
]
# A small model with shapes unlike ViT-B/32 in every field; heads follow OpenAI's width // 64.
SMALL = CLIPConfig(
    embed_dim=48,
    image_resolution=48,
    vision_patch_size=16,
    vision_width=128,
    vision_layers=2,
    vision_heads=2,
    context_length=20,
    vocab_size=1000,
    text_width=192,
    text_layers=3,
    text_heads=3,
)


def openai_module(name: str):
    folder = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(f"openai_clip_{name}", os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_clip(config: CLIPConfig) -> torch.nn.Module:
    """OpenAI's CLIP with the given shape (its vision heads are always width // 64), fp32, non-trivial weights."""
    model = openai_module("model").CLIP(
        config.embed_dim,
        config.image_resolution,
        config.vision_layers,
        config.vision_width,
        config.vision_patch_size,
        config.context_length,
        config.vocab_size,
        config.text_width,
        config.text_heads,
        config.text_layers,
    )
    return perturbed(model).eval()


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move LayerNorm scales off 1 and biases off 0 (both start trivial), so the test sees them."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bias" in name or "norm" in name or "ln_" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def random_tokens(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Ids in 1 .. vocab - 2, then the end token vocab - 1 (the largest id, as in CLIP), zero padding."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        end = int(torch.randint(2, length, (1,), generator=generator))
        tokens[row, :end] = torch.randint(1, vocab - 1, (end,), generator=generator)
        tokens[row, end] = vocab - 1
    return tokens


def features(model, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def hf_features(model, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.get_image_features(pixel_values=images).pooler_output, model.get_text_features(input_ids=tokens).pooler_output


def assert_features(model: CLIP, expected: tuple[torch.Tensor, torch.Tensor], images: torch.Tensor, tokens: torch.Tensor) -> None:
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training
    for got, want in zip(features(model, images, tokens), expected):
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= ATOL


def hf_small_config(hidden_act: str = "quick_gelu") -> transformers.CLIPConfig:
    """SMALL's shapes in HF's terms, but with heads that width // 64 would not give."""
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=SMALL.vocab_size,
            hidden_size=SMALL.text_width,
            intermediate_size=4 * SMALL.text_width,
            num_hidden_layers=SMALL.text_layers,
            num_attention_heads=6,
            max_position_embeddings=SMALL.context_length,
            hidden_act=hidden_act,
            bos_token_id=SMALL.vocab_size - 2,
            eos_token_id=SMALL.vocab_size - 1,
        ),
        vision_config=dict(
            hidden_size=SMALL.vision_width,
            intermediate_size=4 * SMALL.vision_width,
            num_hidden_layers=SMALL.vision_layers,
            num_attention_heads=4,
            image_size=SMALL.image_resolution,
            patch_size=SMALL.vision_patch_size,
            hidden_act=hidden_act,
        ),
        projection_dim=SMALL.embed_dim,
    )


# ---------------------------------------------------------------- ViT-B/32 fixtures, built once


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two random images and three real sentences tokenized by OpenAI's own tokenizer."""
    tokenizer = openai_module("simple_tokenizer").SimpleTokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = torch.zeros(len(SENTENCES), 77, dtype=torch.long)
    for row, text in enumerate(SENTENCES):
        ids = [start] + tokenizer.encode(text) + [end]
        tokens[row, : len(ids)] = torch.tensor(ids)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return images, tokens


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    torch.manual_seed(0)
    return reference_clip(CLIPConfig())


@pytest.fixture(scope="module")
def reference_features(reference, inputs):
    return features(reference, *inputs)


@pytest.fixture(scope="module")
def fp16_state(reference) -> dict[str, torch.Tensor]:
    """The reference's weights as OpenAI ships them: rounded to fp16."""
    return {name: tensor.half() for name, tensor in reference.state_dict().items()}


@pytest.fixture(scope="module")
def rounded_features(reference, fp16_state, inputs):
    """The reference with its weights rounded to fp16 and back, run in fp32."""
    rounded = copy.deepcopy(reference)
    rounded.load_state_dict(fp16_state)  # copies into the fp32 parameters
    return features(rounded, *inputs)


@pytest.fixture(scope="module")
def openai_file(reference, folder) -> Path:
    path = folder / "openai_fp32.pt"
    torch.save(reference.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours(openai_file) -> CLIP:
    return load_clip(openai_file)


@pytest.fixture(scope="module")
def hf_model() -> transformers.CLIPModel:
    torch.manual_seed(0)
    return perturbed(transformers.CLIPModel(transformers.CLIPConfig())).eval()


@pytest.fixture(scope="module")
def hf_expected(hf_model, inputs):
    return hf_features(hf_model, *inputs)


@pytest.fixture(scope="module")
def hf_folders(hf_model, folder) -> dict[str, Path]:
    """The same HF model as model.safetensors and as pytorch_model.bin, each with config.json."""
    safetensors_folder, bin_folder = folder / "hf_safetensors", folder / "hf_bin"
    hf_model.save_pretrained(safetensors_folder)
    # transformers 5 always writes safetensors; pytorch_model.bin is what earlier versions wrote,
    # a torch.save of the state dict, which then still held the position_ids buffers.
    bin_folder.mkdir()
    shutil.copy(safetensors_folder / "config.json", bin_folder / "config.json")
    state = dict(hf_model.state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state["vision_model.embeddings.position_ids"] = torch.arange(50)[None]
    torch.save(state, bin_folder / "pytorch_model.bin")
    return {"safetensors": safetensors_folder, "bin": bin_folder}


@pytest.fixture(scope="module")
def ours_from_hf(hf_folders) -> CLIP:
    return load_clip(hf_folders["safetensors"])


# ---------------------------------------------------------------- parity with OpenAI's code


def test_openai_state_dict_matches_reference(ours, reference_features, inputs):
    assert ours.config == CLIPConfig()
    assert_features(ours, reference_features, *inputs)


def test_fp16_state_dict_matches_rounded_reference(fp16_state, folder, rounded_features, inputs):
    path = folder / "openai_fp16.pt"
    torch.save(fp16_state, path)
    assert_features(load_clip(path), rounded_features, *inputs)


def test_torchscript_archive_matches_rounded_reference(reference, folder, rounded_features, inputs):
    """Like OpenAI's released .pt files: a traced model, fp16 weights, and three int entries."""
    archived = copy.deepcopy(reference)
    del archived.context_length, archived.vocab_size  # plain ints in OpenAI's class, tensors in the archives
    archived.register_buffer("input_resolution", torch.tensor(224))
    archived.register_buffer("context_length", torch.tensor(77))
    archived.register_buffer("vocab_size", torch.tensor(49408))
    # Traced in fp32 (OpenAI's LayerNorm cannot run with fp16 weights on a CPU), stored in fp16.
    traced = torch.jit.trace_module(archived, {"encode_text": inputs[1][:1]}, check_trace=False).half()
    state = traced.state_dict()
    assert state["visual.proj"].dtype == torch.float16 and state["input_resolution"].item() == 224
    path = folder / "ViT-B-32.pt"
    traced.save(str(path))
    del archived, traced, state
    assert_features(load_clip(path), rounded_features, *inputs)


def test_save_clip_round_trip(ours, folder):
    path = folder / "saved" / "clip.pt"
    path.parent.mkdir()
    path.write_text("an older file, to be replaced")
    save_clip(ours, path)
    assert os.listdir(path.parent) == ["clip.pt"]  # no temporary file left behind
    again = load_clip(path)
    assert again.config == ours.config
    # Equal weights give equal features; the small round trip below runs the features too.
    for (name, got), want in zip(again.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(got, want), name


# ---------------------------------------------------------------- parity with Hugging Face


def test_hf_safetensors_folder_matches_transformers(ours_from_hf, hf_expected, inputs):
    assert ours_from_hf.config == CLIPConfig()
    assert_features(ours_from_hf, hf_expected, *inputs)


def test_hf_bin_folder_matches_transformers(hf_folders, hf_expected, inputs):
    model = load_clip(hf_folders["bin"])
    assert model.config == CLIPConfig()
    assert_features(model, hf_expected, *inputs)


def test_missed_text_projection_transpose_would_be_caught(ours_from_hf, hf_expected, inputs):
    """text_projection is square, so loading it untransposed raises nothing: only the features tell."""
    model = ours_from_hf
    with torch.no_grad():
        x, eot = model.embed_text(inputs[1])
        x = model.transformer(x, causal=True)
        pooled = model.ln_final(x[torch.arange(len(eot)), eot])  # (B, text_width)
        right, wrong = pooled @ model.text_projection, pooled @ model.text_projection.T
    assert (right - hf_expected[1]).abs().max().item() <= ATOL
    assert (wrong - hf_expected[1]).abs().max().item() > 1000 * ATOL


def test_hf_heads_come_from_config_json(tmp_path):
    """width // 64 would give 2 and 3 heads here; HF's config says 4 and 6, and the features agree only with 4 and 6."""
    torch.manual_seed(0)
    hf = perturbed(transformers.CLIPModel(hf_small_config())).eval()
    hf.save_pretrained(tmp_path)
    images = torch.randn(2, 3, SMALL.image_resolution, SMALL.image_resolution)
    tokens = random_tokens(4, SMALL.context_length, SMALL.vocab_size)
    expected = hf_features(hf, images, tokens)
    for path in (tmp_path, tmp_path / "model.safetensors"):  # the folder, or its weight file on its own
        model = load_clip(path)
        assert model.config == dataclasses.replace(SMALL, vision_heads=4, text_heads=6)
        assert_features(model, expected, images, tokens)


# ---------------------------------------------------------------- shapes read off the weights


@pytest.fixture
def small_reference() -> torch.nn.Module:
    torch.manual_seed(0)
    return reference_clip(SMALL)


def small_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, SMALL.image_resolution, SMALL.image_resolution, generator=torch.Generator().manual_seed(2))
    return images, random_tokens(4, SMALL.context_length, SMALL.vocab_size)


def test_small_config_is_read_off_the_weights(small_reference, tmp_path):
    assert config_from_state_dict(small_reference.state_dict()) == SMALL
    path = tmp_path / "small.pt"
    torch.save(small_reference.state_dict(), path)
    model = load_clip(path)
    assert model.config == SMALL
    images, tokens = small_inputs()
    assert_features(model, features(small_reference, images, tokens), images, tokens)
    save_clip(model, tmp_path / "again.pt")
    again = load_clip(tmp_path / "again.pt")
    assert again.config == SMALL
    for got, want in zip(features(again, images, tokens), features(model, images, tokens)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("container", ["zip", "legacy", "safetensors", "torchscript"])
def test_small_checkpoint_in_every_container(container, small_reference, tmp_path):
    """torch.save's zip and pre-1.6 pickle formats, safetensors (as open_clip's hub files), TorchScript."""
    path = tmp_path / "small.bin"
    state = small_reference.state_dict()
    if container == "zip":
        torch.save(state, path)
    elif container == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif container == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        tokens = random_tokens(1, SMALL.context_length, SMALL.vocab_size)
        torch.jit.trace_module(small_reference, {"encode_text": tokens}, check_trace=False).save(str(path))
    images, tokens = small_inputs()
    assert_features(load_clip(path), features(small_reference, images, tokens), images, tokens)


def test_open_clip_wrapped_checkpoint(small_reference, tmp_path):
    """open_clip's training checkpoints: {"epoch", "state_dict"} with DistributedDataParallel's "module." prefix."""
    state = {f"module.{name}": tensor for name, tensor in small_reference.state_dict().items()}
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "ViT-B-32-quickgelu", "state_dict": state}, path)
    images, tokens = small_inputs()
    assert_features(load_clip(path), features(small_reference, images, tokens), images, tokens)


def test_save_clip_refuses_heads_the_format_cannot_record(tmp_path):
    model = CLIP(dataclasses.replace(SMALL, text_heads=6))
    with pytest.raises(ValueError, match="heads"):
        save_clip(model, tmp_path / "clip.pt")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- mistakes a user can make


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return CLIP(SMALL).state_dict()


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def missing_keys(tmp: Path) -> Path:
    state = small_state()
    for name in sorted(name for name in state if name.startswith("transformer.resblocks.1."))[:7]:
        del state[name]
    return save(tmp / "missing.pt", state)


def unexpected_keys(tmp: Path) -> Path:
    return save(tmp / "unexpected.pt", {**small_state(), "visual.attnpool.k_proj.weight": torch.zeros(2, 2)})


def wrong_shape(tmp: Path) -> Path:
    state = small_state()
    state["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(700, 192)
    return save(tmp / "wrong_shape.pt", state)


def shape_key_missing(tmp: Path) -> Path:
    state = small_state()
    del state["visual.conv1.weight"]
    return save(tmp / "no_conv1.pt", state)


def nowhere(tmp: Path) -> Path:
    return tmp / "nowhere.pt"


def text_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("These are not weights.\n")
    return path


def jpeg(tmp: Path) -> Path:
    path = tmp / "photo.jpg"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    return path


def empty_file(tmp: Path) -> Path:
    path = tmp / "empty.pt"
    path.touch()
    return path


def truncated_zip(tmp: Path) -> Path:
    return cut_in_half(save(tmp / "truncated.pt", small_state()))


def truncated_legacy(tmp: Path) -> Path:
    path = tmp / "truncated_legacy.pt"
    torch.save(small_state(), path, _use_new_zipfile_serialization=False)
    return cut_in_half(path)


def truncated_safetensors(tmp: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp / "truncated.safetensors"
    save_file(small_state(), str(path))
    return cut_in_half(path)


def truncated_torchscript(tmp: Path) -> Path:
    model = reference_clip(SMALL)
    path = tmp / "truncated_jit.pt"
    torch.jit.trace_module(model, {"encode_text": random_tokens(1, SMALL.context_length, SMALL.vocab_size)}).save(str(path))
    return cut_in_half(path)


def whole_model_pickled(tmp: Path) -> Path:
    return save(tmp / "model_object.pt", CLIP(SMALL))


def list_not_state_dict(tmp: Path) -> Path:
    return save(tmp / "list.pt", [torch.zeros(2), torch.ones(2)])


def hf_gelu(tmp: Path) -> Path:
    transformers.CLIPModel(hf_small_config("gelu")).save_pretrained(tmp / "hf_gelu")
    return tmp / "hf_gelu"


def folder_without_weights(tmp: Path) -> Path:
    (tmp / "hf_empty").mkdir()
    (tmp / "hf_empty" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    return tmp / "hf_empty"


def folder_without_config(tmp: Path) -> Path:
    (tmp / "plain_folder").mkdir()
    return tmp / "plain_folder"


@pytest.mark.parametrize(
    "make, words",
    [
        (nowhere, ["No such file or directory", "check the path"]),
        (text_file, ["not a checkpoint"]),
        (jpeg, ["not a checkpoint"]),
        (empty_file, ["not a checkpoint"]),
        (truncated_zip, ["truncated"]),
        (truncated_legacy, ["truncated"]),
        (truncated_safetensors, ["truncated"]),
        (truncated_torchscript, ["truncated"]),
        (whole_model_pickled, ["pickled Python objects", "state_dict()"]),
        (list_not_state_dict, ["not a state dict"]),
        (missing_keys, ["7 missing key(s)", "transformer.resblocks.1.attn.in_proj_bias", "2 more"]),
        (unexpected_keys, ["1 unexpected key(s)", "visual.attnpool.k_proj.weight", "ResNet"]),
        (wrong_shape, ["transformer.resblocks.1.mlp.c_fc.weight", "expected (768, 192)", "found (700, 192)"]),
        (shape_key_missing, ["lacks visual.conv1.weight"]),
        (hf_gelu, ["hidden_act 'gelu'", "QuickGELU"]),
        (folder_without_weights, ["neither model.safetensors nor pytorch_model.bin"]),
        (folder_without_config, ["without config.json"]),
    ],
    ids=lambda value: value.__name__ if callable(value) else "",
)
def test_bad_input_is_explained_in_one_line(make, words, tmp_path):
    path = make(tmp_path)
    with pytest.raises(WeightsError) as info:
        load_clip(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message


def test_safetensors_without_the_package(small_reference, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(small_reference.state_dict(), str(path))
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(WeightsError, match="pip install safetensors") as info:
        load_clip(path)
    assert str(path) in str(info.value)
