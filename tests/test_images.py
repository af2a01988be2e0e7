"""clip_min.images.preprocess against the same pipeline computed independently in float64 numpy."""
import numpy as np
import pytest
import torch
from PIL import Image

from clip_min import images as pp


def random_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def reference(image: Image.Image, resolution: int) -> np.ndarray:
    """Short side to resolution (long side truncated), bicubic, center crop, scale, normalize."""
    w, h = image.size
    if w <= h:
        size = (resolution, int(resolution * h / w))
    else:
        size = (int(resolution * w / h), resolution)
    pixels = np.asarray(image.resize(size, Image.BICUBIC), dtype=np.float64)  # (H, W, 3)
    top = int(round((size[1] - resolution) / 2.0))
    left = int(round((size[0] - resolution) / 2.0))
    pixels = pixels[top : top + resolution, left : left + resolution]
    x = (pixels / 255.0 - np.array(pp.MEAN)) / np.array(pp.STD)
    return x.transpose(2, 0, 1)  # (3, resolution, resolution)


@pytest.mark.parametrize(
    "width, height",
    [(640, 480), (480, 640), (224, 224), (100, 60), (60, 100), (225, 224), (301, 199), (1000, 227), (50, 50)],
)
def test_matches_float64_reference(width, height):
    image = random_image(width, height, seed=width * height)
    got = pp.preprocess(image)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), reference(image, 224), rtol=0, atol=1e-6)


def test_long_side_is_truncated_not_rounded():
    assert pp.resized_size(300, 200, 224) == (336, 224)
    assert pp.resized_size(200, 301, 224) == (224, 337)  # 337.12
    assert pp.resized_size(199, 301, 224) == (224, 338)  # 338.81, not 339


def test_resolution_argument():
    image = random_image(90, 70, seed=1)
    got = pp.preprocess(image, resolution=32)
    assert got.shape == (3, 32, 32)
    np.testing.assert_allclose(got.double().numpy(), reference(image, 32), rtol=0, atol=1e-6)


def make_mode(mode: str) -> Image.Image:
    base = random_image(120, 80, "RGB", seed=2)
    if mode == "I;16":
        return Image.fromarray(np.arange(120 * 80, dtype=np.uint16).reshape(80, 120))  # mode I;16
    if mode == "RGBA":
        return random_image(120, 80, "RGBA", seed=3)
    if mode == "LA":
        return base.convert("RGBA").convert("LA")
    if mode == "PA":
        return base.convert("P").convert("PA")
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["L", "P", "PA", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_any_mode_gives_rgb_tensor(mode):
    image = make_mode(mode)
    assert image.mode == mode
    got = pp.preprocess(image)
    assert got.shape == (3, 224, 224) and torch.isfinite(got).all()


def test_grayscale_has_equal_channels():
    got = pp.preprocess(random_image(64, 48, "L"))
    std = torch.tensor(pp.STD).view(3, 1, 1)
    mean = torch.tensor(pp.MEAN).view(3, 1, 1)
    unnormalized = got * std + mean  # back to [0, 1]: the three channels are the same gray
    torch.testing.assert_close(unnormalized[0], unnormalized[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(unnormalized[0], unnormalized[2], rtol=0, atol=1e-6)


def test_load_image(tmp_path):
    path = tmp_path / "ok.png"
    random_image(40, 30).save(path)
    image = pp.load_image(path)
    assert image.size == (40, 30)
    assert pp.preprocess(image).shape == (3, 224, 224)


def test_load_image_missing(tmp_path):
    with pytest.raises(pp.ImageLoadError, match="not found"):
        pp.load_image(tmp_path / "nope.jpg")


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG")
    with pytest.raises(pp.ImageLoadError, match="cannot decode"):
        pp.load_image(path)


def test_load_image_truncated(tmp_path):
    path = tmp_path / "cut.png"
    random_image(64, 64).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(pp.ImageLoadError, match="cannot decode"):
        pp.load_image(path)


def test_empty_image_rejected():
    with pytest.raises(ValueError, match="no pixels"):
        pp.preprocess(Image.new("RGB", (0, 5)))
