"""Load CLIP weights from the formats they are published in, and save them in OpenAI's.

Three formats reach :func:`load_clip`:

* OpenAI's released ``.pt`` files: TorchScript archives whose tensors are fp16, read as data
  without running their code (:mod:`clip_min.torchscript`).
* Plain state dicts with OpenAI's key names, from ``torch.save`` (our own :func:`save_clip`,
  open_clip's ``-quickgelu`` checkpoints, which may wrap them as ``{"state_dict": ...}`` with
  the ``module.`` prefix of DistributedDataParallel) or from a ``.safetensors`` file.
* Hugging Face checkpoints (``CLIPModel.save_pretrained``): a folder with ``config.json`` and
  ``model.safetensors`` or ``pytorch_model.bin``, or one of those files; their key names are
  mapped back to OpenAI's (:func:`openai_from_hf`).

Whatever the format, the shape of the model is read off the weights, as OpenAI's
``build_model`` does (:func:`config_from_state_dict`), every tensor becomes fp32, and the
weights load with ``strict=True``. A file the user got wrong raises :class:`WeightsError`,
whose one-line message names the file, the problem and what to do.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from clip_min import torchscript
from clip_min.files import UnreadableFile, atomic_save, atomic_write, atomic_write_text, doubled_name, folder_fingerprint, read_identified
from clip_min.model import CLIP, CLIPConfig
from clip_min.tokenizer import EOT

# Entries of OpenAI's archives that describe the model rather than hold weights.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The largest weights file read. The largest OpenAI CLIP, ViT-L/14@336px, is 1.7 GB in fp32, and
# open_clip's ViT-H/14 3.9 GB; a file past 8 GiB is not a CLIP this code could hold twice in memory
# (its bytes and its tensors), so it is refused before it is read.
MAX_WEIGHTS_BYTES = 8 << 30
# Hugging Face's config.json of a CLIPModel is about 5 kB.
MAX_HF_CONFIG_BYTES = 1 << 20


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line meant for the user."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # one line, even if a quoted error had several


def load_clip(path: str | os.PathLike, device: str | torch.device = "cpu") -> CLIP:
    """Read a checkpoint in any of the supported formats into an fp32 CLIP in eval mode."""
    return load_weights(path, device)[0]


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CLIP, str]:
    """:func:`load_clip`, and the fingerprint of the very bytes the model was built from.

    The fingerprint is ``files.content_fingerprint``'s (SHA-256 of the file, or of a folder's
    files), but of the bytes read: a file replaced between hashing it and reading it cannot pass
    for the one that was hashed.
    """
    path = Path(path)
    state_dict, hf_config, weights_id = _read_identified(path)
    config = _config_or_error(state_dict, path)
    if hf_config is not None:
        config = dataclasses.replace(config, **_heads_from_hf_config(hf_config, path))
    # Building on the meta device allocates no memory and skips the random initialisation;
    # assign=True then adopts the loaded tensors as the parameters instead of copying them.
    try:
        with torch.device("meta"):
            model = CLIP(config)
    except ValueError as err:  # only heads from a config.json can fail to divide the width here
        raise WeightsError(f"{path}: {err}; check num_attention_heads in its config.json") from err
    _check_against_model(state_dict, model.state_dict(), path)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval(), weights_id


def check_vocabulary(model: CLIP, path: str | os.PathLike) -> None:
    """Refuse weights with fewer token embeddings than CLIP's tokenizer has ids (49408)."""
    if model.config.vocab_size <= EOT:
        raise WeightsError(f"{path}: its token embedding has {model.config.vocab_size} rows, but CLIP's tokenizer "
                           f"gives ids up to {EOT}; these weights are not for CLIP's vocabulary, pass a CLIP checkpoint")


def save_clip(model: CLIP, path: str | os.PathLike) -> None:
    """Write ``model`` as a plain state dict with OpenAI's key names, atomically.

    The tensors go to a temporary file in the destination folder, which then replaces ``path``
    in one step: an interrupted save leaves the previous file whole.
    """
    config = model.config
    for tower, width, heads in (("vision", config.vision_width, config.vision_heads), ("text", config.text_width, config.text_heads)):
        if heads != width // 64:
            raise ValueError(
                f"cannot save to {path}: {tower} heads {heads} != width {width} // 64, and OpenAI's format "
                "has no field for heads (loaders derive them from the width)"
            )
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    extra = sorted(set(state_dict) - _openai_keys(config))
    if extra:
        raise ValueError(
            f"cannot save to {path}: the model holds tensors OpenAI's format has no place for "
            f"({_some(extra)}); merge or detach adapters first and save them on their own"
        )
    atomic_save(state_dict, path)


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> CLIPConfig:
    """Read the model's shape off OpenAI-named weights, as OpenAI's ``build_model`` does.

    Heads are not stored anywhere in OpenAI's format; like OpenAI we take one per 64 channels.
    Raises KeyError naming a missing key, ValueError if a width does not split into such heads.
    """

    def layers(prefix: str) -> int:
        return len({key.split(".")[len(prefix.split("."))] for key in state_dict if key.startswith(prefix + ".")})

    conv1 = state_dict["visual.conv1.weight"]  # (vision_width, 3, patch, patch)
    positions = state_dict["visual.positional_embedding"].shape[0]  # (1 + grid**2, width)
    grid = math.isqrt(max(positions - 1, 0))
    if grid < 1 or grid * grid != positions - 1:
        raise ValueError(f"visual.positional_embedding has {positions} rows, not 1 + a square number of patches "
                         "(ViT-B/32: 1 + 7 x 7)")
    text_width = state_dict["ln_final.weight"].shape[0]
    for width in (conv1.shape[0], text_width):
        if width < 64 or width % (width // 64):
            raise ValueError(f"width {width} does not split into width // 64 heads, OpenAI's rule")
    config = CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],  # (text_width, embed_dim)
        image_resolution=conv1.shape[-1] * grid,
        vision_patch_size=conv1.shape[-1],
        vision_width=conv1.shape[0],
        vision_layers=layers("visual.transformer.resblocks"),
        vision_heads=conv1.shape[0] // 64,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=layers("transformer.resblocks"),
        text_heads=text_width // 64,
    )
    empty = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config) if getattr(config, f.name) < 1]
    if empty:
        raise ValueError(f"the weights give {empty[0][0]} {empty[0][1]}, and every size of a CLIP is at least 1")
    return config


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Any supported checkpoint -> (fp32 state dict with OpenAI's names, HF config.json or None)."""
    return _read_identified(Path(path))[:2]


def _read_identified(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """:func:`read_state_dict`, and the fingerprint of the bytes read (see :func:`load_weights`)."""
    folder = path if os.path.isdir(path) else None  # os.path: a name too long is no folder, not an error
    if folder is not None:
        config_file = path / "config.json"
        if not os.path.lexists(config_file):
            raise WeightsError(f"{path}: a folder without config.json; pass a Hugging Face CLIP folder or a checkpoint file")
        path = _hf_weight_file(path)
    else:  # a Hugging Face weight file passed on its own may still have its config beside it
        config_file = path.parent / "config.json"

    try:
        data, digest = read_identified(path, MAX_WEIGHTS_BYTES, "weights file")
    except UnreadableFile as err:
        raise WeightsError(str(err)) from None
    digests = {path.name: digest}
    state_dict = _unwrap(_read_file(path, data), path)
    del data
    hf_config = None
    if any(key.startswith(("text_model.", "vision_model.")) for key in state_dict):
        state_dict = openai_from_hf(state_dict)
        if os.path.lexists(config_file):
            hf_config, digests[config_file.name] = _read_hf_config(config_file)
            _check_hf_activation(hf_config, path)
    state_dict = {key: value for key, value in state_dict.items() if key not in NON_WEIGHT_KEYS}
    not_float = [key for key, value in state_dict.items() if not value.is_floating_point()]
    if not_float:
        raise WeightsError(f"{path}: {len(not_float)} tensor(s) are not floating point ({_some(not_float)}, "
                           f"{state_dict[not_float[0]].dtype}); CLIP's weights are floats, pass a CLIP checkpoint")
    state_dict = {key: value.float() for key, value in state_dict.items()}
    # A NaN or inf weight gives NaN scores that print as numbers downstream; refuse it here.
    broken = [key for key, value in state_dict.items() if not torch.isfinite(value).all()]
    if broken:
        raise WeightsError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({_some(broken)}); "
                           "the weights are damaged, download or re-export them")
    weights_id = digest if folder is None else folder_fingerprint(folder, digests)
    return state_dict, hf_config, weights_id


def openai_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face CLIPModel state dict to OpenAI's keys.

    q, k and v are stacked into one in_proj (OpenAI's ``in_proj_weight.chunk(3)`` gives them back),
    and the two projections, stored by HF as nn.Linear weights (out, in), are transposed to
    OpenAI's (in, out) matrices. Keys with no OpenAI name keep their HF name, so that the
    strict key check reports them.
    """
    renames = {
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.": "visual.ln_pre.",
        "vision_model.post_layernorm.": "visual.ln_post.",
        "vision_model.encoder.layers.": "visual.transformer.resblocks.",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.": "ln_final.",
        "text_model.encoder.layers.": "transformer.resblocks.",
    }
    block_renames = {
        ".self_attn.out_proj.": ".attn.out_proj.",
        ".layer_norm1.": ".ln_1.",
        ".layer_norm2.": ".ln_2.",
        ".mlp.fc1.": ".mlp.c_fc.",
        ".mlp.fc2.": ".mlp.c_proj.",
    }
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}  # "visual...resblocks.3.attn.in_proj_weight" -> {"q": ...}
    for key, value in hf.items():
        if key.endswith("position_ids"):  # a buffer of 0, 1, 2, ... that older HF versions saved
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()  # (embed_dim, width) -> (width, embed_dim)
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()  # (embed_dim, width) -> (width, embed_dim)
            continue
        name = key
        for old, new in renames.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        for old, new in block_renames.items():
            name = name.replace(old, new)
        for letter in "qkv":
            marker = f".self_attn.{letter}_proj."
            if marker in name and name.split(marker)[1] in ("weight", "bias"):
                head, kind = name.split(marker)
                qkv.setdefault(f"{head}.attn.in_proj_{kind}", {})[letter] = value
                break
        else:
            out[name] = value
    for name, parts in qkv.items():
        if set(parts) == set("qkv"):
            out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3 * width, ...)
        else:  # an incomplete triple: keep what is there under HF's names for the error message
            head, kind = name.rsplit(".attn.in_proj_", 1)
            out.update({f"{head}.self_attn.{letter}_proj.{kind}": part for letter, part in parts.items()})
    return out


def hf_from_openai(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an OpenAI-format state dict to Hugging Face CLIPModel's keys: the inverse of :func:`openai_from_hf`.

    The fused in_proj splits into q, k and v (``chunk(3)``, OpenAI's order), and the two
    projections are transposed from OpenAI's (in, out) matrices to nn.Linear weights (out, in).
    Every tensor is a fresh contiguous copy: safetensors refuses tensors that share memory.
    """
    renames = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.": "vision_model.pre_layrnorm.",
        "visual.ln_post.": "vision_model.post_layernorm.",
        "visual.transformer.resblocks.": "vision_model.encoder.layers.",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.": "text_model.final_layer_norm.",
        "transformer.resblocks.": "text_model.encoder.layers.",
        "logit_scale": "logit_scale",
    }
    block_renames = {
        ".attn.out_proj.": ".self_attn.out_proj.",
        ".ln_1.": ".layer_norm1.",
        ".ln_2.": ".layer_norm2.",
        ".mlp.c_fc.": ".mlp.fc1.",
        ".mlp.c_proj.": ".mlp.fc2.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in NON_WEIGHT_KEYS:
            continue
        if key in ("visual.proj", "text_projection"):
            name = "visual_projection.weight" if key == "visual.proj" else "text_projection.weight"
            out[name] = value.t().contiguous().clone()  # (width, embed_dim) -> (embed_dim, width)
            continue
        prefix = next((old for old in renames if key == old or (old.endswith(".") and key.startswith(old))), None)
        if prefix is None:
            raise ValueError(f"{key} has no Hugging Face name; pass a plain CLIP state dict (merge and drop adapters first)")
        name = renames[prefix] + key[len(prefix) :]
        for old, new in block_renames.items():
            name = name.replace(old, new)
        if ".attn.in_proj_" in name:
            head, kind = name.split(".attn.in_proj_")
            for letter, part in zip("qkv", value.chunk(3)):  # (3 * width, ...) -> 3 x (width, ...)
                out[f"{head}.self_attn.{letter}_proj.{kind}"] = part.contiguous().clone()
            continue
        out[name] = value.contiguous().clone()
    return out


def hf_config_dict(config: CLIPConfig) -> dict:
    """A Hugging Face ``config.json`` for a CLIPModel of this shape, with OpenAI's choices spelled out.

    QuickGELU and LayerNorm eps 1e-5 are what OpenAI's models use. The end-of-text id is the
    largest in the vocabulary; HF pools the text at its first occurrence, where CLIP takes
    the argmax of the ids, which is the same position.
    """
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": 2.6592,  # log(1 / 0.07); the weights carry the trained value
        "text_config": {
            "vocab_size": config.vocab_size,
            "hidden_size": config.text_width,
            "intermediate_size": 4 * config.text_width,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "max_position_embeddings": config.context_length,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
            "bos_token_id": config.vocab_size - 2,
            "eos_token_id": config.vocab_size - 1,
        },
        "vision_config": {
            "hidden_size": config.vision_width,
            "intermediate_size": 4 * config.vision_width,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
            "image_size": config.image_resolution,
            "patch_size": config.vision_patch_size,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
        },
    }


def save_hf(model: CLIP, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a Hugging Face CLIPModel folder: config.json and model.safetensors.

    ``transformers.CLIPModel.from_pretrained(folder)`` loads it, as does :func:`load_clip`.
    Without the safetensors package the weights go to pytorch_model.bin instead.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a Hugging Face checkpoint is a folder, pass a folder path")
    tensors = hf_from_openai({name: tensor.detach().cpu().float() for name, tensor in model.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from safetensors.torch import save
    except ImportError:
        atomic_save(tensors, folder / "pytorch_model.bin")
    else:
        atomic_write(folder / "model.safetensors", lambda f: f.write(save(tensors, metadata={"format": "pt"})))
    atomic_write_text(folder / "config.json", json.dumps(hf_config_dict(model.config), indent=2) + "\n")
    return folder


def _read_file(path: Path, data: bytes) -> object:
    """Deserialise one checkpoint file from its bytes ``data``, sniffing its format from the first ones."""
    head, size = data[:9], len(data)
    try:
        if head.startswith(b"PK\x03\x04"):  # a zip: torch.save's format, and TorchScript's
            try:
                names = zipfile.ZipFile(io.BytesIO(data)).namelist()
            except zipfile.BadZipFile as err:  # the zip's directory is at its end: the first thing a cut loses
                raise WeightsError(f"{path}: a zip archive without a readable directory, so truncated or corrupt; download or copy it again") from err
            twice = doubled_name(names)
            if twice is not None:
                raise WeightsError(f"{path}: the archive holds {twice} twice, and which one a reader takes is up to "
                                   "the reader; the file is damaged or crafted, download or copy it again")
            if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
                # OpenAI's released models. torch.jit.load would run the archive's code, so
                # the archive is read as data instead (clip_min.torchscript).
                try:
                    return torchscript.read_state_dict(io.BytesIO(data))
                except torchscript.ArchiveError as err:
                    raise WeightsError(f"{path}: a TorchScript archive that cannot be read as weights: {err}; "
                                       "use OpenAI's released file or a plain state dict") from None
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
            return _read_safetensors(path, data)
        if head.startswith(b"\x80"):  # a pickle: torch.save's format before PyTorch 1.6
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise WeightsError(
                f"{path}: holds pickled Python objects, not only tensors, and is not loaded for safety "
                "(weights_only=True); save model.state_dict() instead of the model"
            ) from err
        raise WeightsError(f"{path}: could not be unpickled, it may be truncated or corrupt; download or copy it again") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: could not be read, it may be truncated or corrupt ({first_line}); download or copy it again") from err
    raise WeightsError(
        f"{path}: not a checkpoint (expected a PyTorch, TorchScript or safetensors file); "
        "pass OpenAI's .pt file, a state dict, or a Hugging Face CLIP folder"
    )


def _read_safetensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load
    except ImportError as err:
        raise WeightsError(f"{path}: is a safetensors file but the safetensors package is missing; pip install safetensors") from err
    try:
        return load(data)
    except Exception as err:  # safetensors raises its own SafetensorError for every malformed file
        raise WeightsError(f"{path}: could not be read as safetensors, it may be truncated or corrupt ({err}); download or copy it again") from err


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """open_clip's training checkpoints wrap the weights; DistributedDataParallel prefixes them."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors; pass a CLIP checkpoint")
    not_names = [repr(key) for key in loaded if not isinstance(key, str)]
    if not_names:
        raise WeightsError(f"{path}: keys {_some(not_names)} are not names, so this is not a state dict; pass a CLIP checkpoint")
    if all(key.startswith("module.") for key in loaded):
        loaded = {key[len("module.") :]: value for key, value in loaded.items()}
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{path}: entries {_some(not_tensors)} are not tensors, so this is not a state dict; pass a CLIP checkpoint")
    return loaded


def _read_hf_config(path: Path) -> tuple[dict, str]:
    """config.json, and the fingerprint of its bytes."""
    try:
        data, digest = read_identified(path, MAX_HF_CONFIG_BYTES, "Hugging Face config.json")
    except UnreadableFile as err:
        raise WeightsError(str(err)) from None
    try:
        config = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise WeightsError(f"{path}: JSON nested too deeply to be a config; restore the config.json of this checkpoint") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path}: not valid JSON ({err}); restore the config.json of this checkpoint") from err
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: holds {type(config).__name__}, not a JSON object; restore the config.json of this checkpoint")
    return config, digest


def _hf_weight_file(folder: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if os.path.lexists(folder / name):
            return folder / name
    raise WeightsError(f"{folder}: has config.json but neither {' nor '.join(HF_WEIGHT_FILES)}; download the weights into it")


def _sub_config(hf_config: dict, tower: str, path: Path) -> dict:
    """HF's text_config / vision_config (older configs may name them text_config_dict / vision_config_dict)."""
    for name in (f"{tower}_config", f"{tower}_config_dict"):
        value = hf_config.get(name)
        if value is not None and not isinstance(value, dict):
            raise WeightsError(f"{path.parent / 'config.json'}: {name} is a JSON {type(value).__name__}, not an object; "
                               "restore the config.json of this checkpoint")
        if value:
            return value
    return {}


def _check_hf_activation(hf_config: dict, path: Path) -> None:
    for tower in ("text", "vision"):
        act = _sub_config(hf_config, tower, path).get("hidden_act", "quick_gelu")  # HF's default
        if act != "quick_gelu":
            raise WeightsError(
                f"{path}: its config.json gives the {tower} tower hidden_act {act!r}, but clip_min implements "
                "only QuickGELU, which OpenAI's CLIP models use; pick a quick_gelu checkpoint"
            )


def _heads_from_hf_config(hf_config: dict, path: Path) -> dict[str, int]:
    # HF's defaults (ViT-B/32) apply when its config leaves a field out.
    heads = {
        "vision_heads": _sub_config(hf_config, "vision", path).get("num_attention_heads", 12),
        "text_heads": _sub_config(hf_config, "text", path).get("num_attention_heads", 8),
    }
    if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in heads.values()):
        raise WeightsError(f"{path}: config.json has num_attention_heads {heads}, not positive integers; restore its config.json")
    return heads


def _config_or_error(state_dict: dict[str, torch.Tensor], path: Path) -> CLIPConfig:
    try:
        return config_from_state_dict(state_dict)
    except KeyError as err:
        raise WeightsError(f"{path}: lacks {err.args[0]}, needed to read the model's shape; {_is_it_clip(state_dict)}") from err
    except (ValueError, IndexError) as err:
        raise WeightsError(f"{path}: the model's shape cannot be read off its weights ({err}); pass a ViT CLIP checkpoint") from err


def _check_against_model(state_dict: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], path: Path) -> None:
    """Compare keys and shapes with the model's own state dict, and explain any difference."""
    expected = {name: tuple(tensor.shape) for name, tensor in model_state.items()}
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_some(unexpected)})")
        raise WeightsError(f"{path}: {' and '.join(parts)}; {_is_it_clip(state_dict)}")
    wrong = [name for name, shape in expected.items() if tuple(state_dict[name].shape) != shape]
    if wrong:
        name = wrong[0]
        raise WeightsError(
            f"{path}: {len(wrong)} tensor(s) of the wrong shape, first {name}: expected {expected[name]} "
            f"(from the shape read off the other weights), found {tuple(state_dict[name].shape)}; the file is inconsistent, re-export it"
        )


def _is_it_clip(state_dict: dict[str, torch.Tensor]) -> str:
    if any(key.startswith(("visual.layer1.", "visual.attnpool.")) for key in state_dict):
        return "this looks like a ResNet CLIP, and clip_min implements only the ViT ones"
    return "is this a ViT CLIP checkpoint in OpenAI, open_clip or Hugging Face format?"


def _openai_keys(config: CLIPConfig) -> set[str]:
    with torch.device("meta"):
        return set(CLIP(config).state_dict())


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
