"""Image features from a frozen vision tower, computed once and cached on disk.

The authors train only the text tower, so every image's embedding is fixed for the whole run:
encoding the 77k Concadia images once and reusing them across epochs and runs is the single
largest saving in the pipeline. The cache key covers the weights (by content) and the image files
(by path, size, modification time, inode and change time: ``files.file_fingerprint``; the last two
cannot be set back, so a file whose bytes were replaced is encoded again). With ``--towers both``
(the paper's full fine-tuning) the tower trains, and :func:`encode_now` bypasses the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..files import atomic_save, cache_root, file_fingerprint, load_tensors
from ..model import CLIP
from ..images import ImageLoadError, load_image, preprocess


def cache_key(weights_id: str, paths: list[Path], resolution: int) -> str:
    digest = hashlib.sha1(f"{weights_id}|{resolution}".encode())
    for path in paths:
        try:
            digest.update(file_fingerprint(path).encode())
        except OSError:  # missing, or a link that loops: the caller counts it; its name still keys the cache
            digest.update(str(path).encode())
    return digest.hexdigest()[:20]


def encode_images(
    model: CLIP,
    paths: list[Path],
    weights_id: str,
    batch_size: int = 64,
    device: str = "cpu",
    autocast=None,
    desc: str = "encoding images",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features (N, embed_dim) for ``paths`` and a mask (N,) of the images that decoded.

    Rows of images that failed to decode are zero and their mask entry False; the caller
    drops and counts them. Results are cached under cache_root()/features.
    """
    key = cache_key(weights_id, paths, model.config.image_resolution)
    return _encode_cached(model, len(paths), lambda row: load_image(paths[row]), key, batch_size, device, autocast, desc)


def encode_arrays(
    model: CLIP,
    pixels: np.ndarray,
    weights_id: str,
    batch_size: int = 64,
    device: str = "cpu",
    autocast=None,
    desc: str = "encoding images",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`encode_images` for images held in memory: uint8 (N, H, W, 3), as CIFAR ships them.

    The cache key hashes the pixels themselves, since there is no file to fingerprint.
    """
    digest = hashlib.sha1(f"{weights_id}|{model.config.image_resolution}|{pixels.shape}|{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    key = "arrays-" + digest.hexdigest()[:20]
    return _encode_cached(model, len(pixels), lambda row: Image.fromarray(pixels[row]), key, batch_size, device, autocast, desc)


def encode_now(
    model: CLIP,
    paths: list[Path],
    pixels: np.ndarray | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    autocast=None,
    desc: str = "encoding images",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`encode_images` (or :func:`encode_arrays`, given ``pixels``), bypassing the cache.

    For a vision tower that is being trained (``--towers both``): its features change every step.
    """
    if pixels is not None:
        return _encode(model, len(pixels), lambda row: Image.fromarray(pixels[row]), batch_size, device, autocast, desc)
    return _encode(model, len(paths), lambda row: load_image(paths[row]), batch_size, device, autocast, desc)


def _encode_cached(model: CLIP, n: int, load, key: str, batch_size: int, device: str, autocast, desc: str):
    """Encode images 0 .. n - 1, each opened by ``load(row)``, or read them from the cache under ``key``."""
    cache_file = cache_root() / "features" / f"{key}.pt"
    if cache_file.exists():
        cached = _read_cache(cache_file, n, model.config.embed_dim)
        if cached is not None:
            return cached
    features, ok = _encode(model, n, load, batch_size, device, autocast, desc)
    atomic_save({"features": features, "ok": ok}, cache_file)
    return features, ok


def _read_cache(cache_file: Path, n: int, embed_dim: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cached (features, ok) pair, or None, with a note, if the file is damaged: it is then rebuilt."""
    # The file holds n x embed_dim float32 features and n flags, in a zip of a few kB of its own.
    limit = n * (4 * embed_dim + 1) + (1 << 20)
    try:
        cached = load_tensors(cache_file, limit, "feature cache")
        features, ok = cached["features"], cached["ok"]
        if features.shape == (n, embed_dim) and ok.shape == (n,) and ok.dtype == torch.bool:
            return features, ok
    except Exception:  # a damaged zip or pickle surfaces as many exception types
        pass
    print(f"note: the feature cache {cache_file} is damaged; computing the features again")
    return None


@torch.no_grad()
def _encode(model: CLIP, n: int, load, batch_size: int, device: str, autocast, desc: str):
    """Encode images 0 .. n - 1, each opened by ``load(row)``: features (n, embed_dim), ok (n,)."""
    resolution = model.config.image_resolution
    features = torch.zeros(n, model.config.embed_dim)
    ok = torch.zeros(n, dtype=torch.bool)
    model.eval()
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch, rows = [], []
        for row in range(start, min(start + batch_size, n)):
            try:
                batch.append(preprocess(load(row), resolution))
            except ImageLoadError:
                continue
            rows.append(row)
        if not batch:
            continue
        pixels = torch.stack(batch).to(device)  # (b, 3, R, R)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            features[rows] = model.encode_image(pixels).float().cpu()
        ok[rows] = True
    return features, ok
