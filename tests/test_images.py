"""clip_min.images.preprocess against the same pipeline computed independently in float64 numpy."""
import numpy as np
import pytest
import torch
from PIL import Image

from clip_min import images as pp

# Typed from OpenAI's clip/clip.py (_transform: Normalize(...)), not read from clip_min.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def random_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def reference(image: Image.Image, resolution: int) -> np.ndarray:
    """OpenAI's _transform with PIL and numpy: Resize(bicubic), CenterCrop, convert("RGB"), ToTensor, Normalize.

    Resize sets the short side to resolution and truncates the long one (torchvision's int());
    PIL resizes in the image's own mode. CenterCrop takes torchvision's offsets,
    int(round((size - resolution) / 2.0)), rounding half to even. Only then does the mode become RGB.
    """
    w, h = image.size
    if w <= h:
        size = (resolution, int(resolution * h / w))
    else:
        size = (int(resolution * w / h), resolution)
    resized = image.resize(size, Image.BICUBIC) if size != image.size else image
    top = int(round((size[1] - resolution) / 2.0))
    left = int(round((size[0] - resolution) / 2.0))
    cropped = resized.crop((left, top, left + resolution, top + resolution))
    pixels = np.asarray(cropped.convert("RGB"), dtype=np.float64)  # (H, W, 3)
    x = (pixels / 255.0 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    return x.transpose(2, 0, 1)  # (3, resolution, resolution)


@pytest.mark.parametrize(
    "width, height",
    [(640, 480), (480, 640), (224, 224), (100, 60), (60, 100), (225, 224), (301, 199), (1000, 227), (50, 50)],
)
def test_matches_float64_reference(width, height):
    image = random_image(width, height, seed=width * height)
    got = pp.preprocess(image)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    # The same uint8 pixels on both sides; float32 normalisation of values up to ~2 leaves ~3e-7, and
    # one grey level is 1 / 255 / 0.27 = 0.015, so 1e-5 sees any pixel that differs.
    np.testing.assert_allclose(got.double().numpy(), reference(image, 224), rtol=0, atol=1e-5)


def test_constants_are_openais():
    assert pp.MEAN == OPENAI_MEAN and pp.STD == OPENAI_STD
    image = Image.new("RGB", (224, 224), (0, 128, 255))
    got = pp.preprocess(image)[:, 0, 0].double().numpy()
    want = (np.array([0, 128, 255]) / 255.0 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("width, height, left, top", [
    (224, 224, 0, 0),
    (225, 224, 0, 0),  # 0.5 rounds to 0 (half to even): not 1 as int(x + 0.5) or ceil would
    (226, 224, 1, 0),
    (227, 224, 2, 0),  # 1.5 rounds to 2: not 1 as floor would
    (229, 224, 2, 0),  # 2.5 rounds to 2
    (224, 227, 0, 2),
    (224, 225, 0, 0),
    (224, 231, 0, 4),  # 3.5 rounds to 4
])
def test_center_crop_offsets_follow_torchvision(width, height, left, top):
    """Short side already 224, so no resize: the crop alone, at offsets torchvision gives (typed here)."""
    image = random_image(width, height, seed=width + 7 * height)
    window = np.asarray(image, dtype=np.float64)[top : top + 224, left : left + 224] / 255.0
    want = ((window - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)).transpose(2, 0, 1)
    np.testing.assert_allclose(pp.preprocess(image).double().numpy(), want, rtol=0, atol=1e-5)


def test_long_side_is_truncated_not_rounded():
    assert pp.resized_size(300, 200, 224) == (336, 224)
    assert pp.resized_size(200, 301, 224) == (224, 337)  # 337.12
    assert pp.resized_size(199, 301, 224) == (224, 338)  # 338.81, not 339


def test_resolution_argument():
    image = random_image(90, 70, seed=1)
    got = pp.preprocess(image, resolution=32)
    assert got.shape == (3, 32, 32)
    np.testing.assert_allclose(got.double().numpy(), reference(image, 32), rtol=0, atol=1e-5)


def make_mode(mode: str) -> Image.Image:
    base = random_image(120, 80, "RGB", seed=2)
    alpha = Image.fromarray(np.random.default_rng(4).integers(0, 256, (80, 120), dtype=np.uint8), "L")
    if mode == "I;16":
        return Image.fromarray(np.arange(120 * 80, dtype=np.uint16).reshape(80, 120))  # mode I;16
    if mode == "RGBA":
        return random_image(120, 80, "RGBA", seed=3)
    if mode in ("LA", "PA"):  # an alpha that varies, so resizing with it (premultiplied) differs from without
        image = base.convert(mode[0])
        image.putalpha(alpha)
        return image
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["L", "P", "PA", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_any_mode_gives_rgb_tensor(mode):
    image = make_mode(mode)
    assert image.mode == mode
    got = pp.preprocess(image)
    assert got.shape == (3, 224, 224) and torch.isfinite(got).all()


def normalized_grey(grey: np.ndarray) -> np.ndarray:
    """8-bit grey levels (H, W) as OpenAI's three normalised channels, in float64."""
    return ((grey / 255.0)[None] - np.array(OPENAI_MEAN)[:, None, None]) / np.array(OPENAI_STD)[:, None, None]


# At resolution 256 a 256 x 256 image is neither resized nor cropped, so every pixel's value shows.
@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_pixels_scale_by_255_over_65535_and_round(mode):
    """Every 16-bit value once (and for "I", values below 0 and above 65535 as well).

    The documented scaling is v * 255 / 65535 = v / 257 rounded: typed here as integer arithmetic,
    (255 v + 32767) // 65535, which equals it because v / 257 is never exactly k + 1/2. Floor, a
    shift by 8 bits (v / 256) or PIL's own clipping convert give other grey levels for many values.
    """
    values = np.arange(65536, dtype=np.int64).reshape(256, 256)
    if mode == "I":
        values = values * 2 - 30000  # -30000 .. 101070
    image = Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.int32))
    assert image.mode == mode
    grey = np.clip((255 * values + 32767) // 65535, 0, 255)
    got = pp.preprocess(image, resolution=256).double().numpy()
    np.testing.assert_allclose(got, normalized_grey(grey), rtol=0, atol=1e-5)  # 1e-5: see test_matches_float64_reference


def test_float_pixels_scale_by_255_and_round_clipping_outside_0_to_1():
    """Mode F: 1.0 is white. v * 255 rounds to the nearest grey level; below 0 is black, above 1 white."""
    values = np.linspace(-0.2, 1.2, 65536, dtype=np.float32).reshape(256, 256)
    image = Image.fromarray(values)
    assert image.mode == "F"
    # floor(x + 1/2) is the nearest level. The only float32 v with v * 255 = k + 1/2 exactly is 0.5
    # (127.5), which rounds to 128 half up and half to even alike.
    grey = np.clip(np.floor(values.astype(np.float64) * 255 + 0.5), 0, 255)
    got = pp.preprocess(image, resolution=256).double().numpy()
    np.testing.assert_allclose(got, normalized_grey(grey), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "PA", "L", "CMYK"])
def test_modes_convert_to_rgb_after_the_crop_as_openai_does(mode):
    """PIL resizes P images with nearest neighbour and RGBA/LA with premultiplied alpha: converting first gives other pixels."""
    image = make_mode(mode)
    assert image.mode == mode
    got = pp.preprocess(image).double().numpy()
    np.testing.assert_allclose(got, reference(image, 224), rtol=0, atol=1e-5)  # the same uint8 pixels, as above
    converted_first = reference(image.convert("RGB"), 224)
    if mode in ("P", "RGBA", "LA", "PA"):  # the order shows here: check that the test can tell
        assert np.abs(converted_first - got).max() > 0.05


def test_grayscale_has_equal_channels():
    got = pp.preprocess(random_image(64, 48, "L"))
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    unnormalized = got * std + mean  # back to [0, 1]: the three channels are the same gray
    torch.testing.assert_close(unnormalized[0], unnormalized[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(unnormalized[0], unnormalized[2], rtol=0, atol=1e-5)


def test_load_image(tmp_path):
    path = tmp_path / "ok.png"
    random_image(40, 30).save(path)
    image = pp.load_image(path)
    assert image.size == (40, 30)
    assert pp.preprocess(image).shape == (3, 224, 224)


def test_load_image_missing(tmp_path):
    with pytest.raises(pp.ImageLoadError, match="nope.jpg to read it: No such file or directory"):
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
