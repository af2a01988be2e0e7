"""Image preprocessing that gives the same pixels as OpenAI CLIP's, using PIL only.

OpenAI's pipeline is torchvision's Resize(bicubic) -> CenterCrop -> convert("RGB") -> ToTensor
-> Normalize. We repeat it step for step, in the same order and with torchvision's rounding, so
a checkpoint sees the inputs it was evaluated on without torchvision installed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import UnreadableFile, open_whole

# Per-channel RGB mean and std of CLIP's training images, on the [0, 1] scale.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# The longest side may be at most this many times the shortest: panoramas pass, strips do not.
MAX_ASPECT = 100
# The largest image file opened. The most pixels PIL decodes (MAX_IMAGE_PIXELS, 89 million) take
# 0.72 GB as an uncompressed 16-bit RGBA file; no image file we can decode is larger.
MAX_IMAGE_BYTES = 1 << 30


class ImageLoadError(RuntimeError):
    """An image file is missing or cannot be decoded."""


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, so a bad file fails here and not mid-batch.

    Every path that reads an image (training, evaluation, score, attribute, the transfer tasks,
    prefer, the pages eval.py writes) opens it here, so each refuses and counts the same files. The
    file must be a regular file (links followed) of at most MAX_IMAGE_BYTES: a FIFO, a device, a
    link that loops or a missing file is an ImageLoadError like an undecodable one. The size is
    checked from the header before decoding: a few-kB file can claim billions of pixels (a
    decompression bomb), and a 300000 x 1 strip would be resized to 224 rows of 67 million pixels.
    PIL only warns between MAX_IMAGE_PIXELS and twice that; we refuse both.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_whole(path, MAX_IMAGE_BYTES, "image") as file, Image.open(file) as image:
                check_size(image.width, image.height, path)
                image.load()  # PIL decodes lazily; force it while we can still name the file
    except UnreadableFile as err:
        raise ImageLoadError(str(err)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(f"{path}: refused, too many pixels to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as err:
        raise ImageLoadError(f"cannot decode {path} as an image ({err}); is it a JPEG/PNG file?") from None
    return image


def check_size(width: int, height: int, path: str | Path) -> None:
    """Refuse an image too elongated to resize: its long side would become MAX_ASPECT x the short."""
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageLoadError(f"{path}: refused, {width} x {height} pixels is more elongated than {MAX_ASPECT}:1, "
                             "and resizing its short side to the model's resolution would need too much memory")


# Where each mode of more than 8 bits per channel keeps its full scale: 16-bit integers up to
# 65535, floats up to 1. PIL's own convert clips them to 0..255 instead, which turns a 16-bit
# image white and a float one black.
FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit (I;16, I) or float (F) image as 8-bit grey ("L"), scaled from its full scale; others as they are."""
    if image.mode not in FULL_SCALE:
        return image
    values = np.asarray(image, dtype=np.float64)
    scaled = np.clip(np.round(values * (255 / FULL_SCALE[image.mode])), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8: mode "L"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode as 8-bit RGB: 16-bit and float images scaled by :func:`to_8bit` first, as everywhere."""
    try:
        return to_8bit(image).convert("RGB")
    except ValueError as err:  # a mode PIL cannot turn into RGB (LAB, HSV, ...)
        raise ImageLoadError(f"a {image.mode} image cannot be converted to RGB ({err})") from None


def resized_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) with the short side set to resolution, as torchvision's Resize(int).

    The long side is truncated with int(), not rounded: a 300x200 image at 224 becomes 336x224.
    """
    short, long = min(width, height), max(width, height)
    new_long = int(resolution * long / short)
    return (resolution, new_long) if width <= height else (new_long, resolution)


def preprocess(image: Image.Image, resolution: int = 224) -> torch.Tensor:
    """PIL image of any mode -> normalized FloatTensor (3, resolution, resolution)."""
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels (size {image.size})")
    image = to_8bit(image)
    # Resize and crop in the image's own mode, then convert: OpenAI's order. (PIL resizes "P" and
    # "1" images with nearest-neighbour, and RGBA with premultiplied alpha, so order matters.)
    size = resized_size(image.width, image.height, resolution)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    # torchvision's center_crop rounds the offset with round(), i.e. half to even.
    top = int(round((image.height - resolution) / 2.0))
    left = int(round((image.width - resolution) / 2.0))
    image = image.crop((left, top, left + resolution, top + resolution))
    rgb = to_rgb(image)
    pixels = np.asarray(rgb, dtype=np.uint8)  # (resolution, resolution, 3)
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)  # (3, res, res) in [0, 1]
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std
