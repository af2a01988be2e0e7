"""clip_min: a small, readable CLIP and the method of "Updating CLIP to Prefer Descriptions Over Captions".

    import clip_min
    model = clip_min.load_clip("ViT-B-32.pt")
    tokens = clip_min.tokenize(["a photo of a cat"])
    pixels = clip_min.preprocess(image)[None]
    text_features, image_features = model.encode_text(tokens), model.encode_image(pixels)
"""

from .model import CLIP, CLIPConfig
from .images import preprocess
from .tokenizer import tokenize
from .weights import load_clip, save_clip

__all__ = ["CLIP", "CLIPConfig", "load_clip", "save_clip", "preprocess", "tokenize"]
