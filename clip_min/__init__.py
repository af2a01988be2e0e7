"""clip_min: a small, readable CLIP and the method of "Updating CLIP to Prefer Descriptions Over Captions".

    import clip_min
    base = clip_min.load_base()                        # the toy world's base; or "ViT-B-32.pt", a HF folder
    clip_min.fit(objective="behavioral", lora_rank=64, out="runs/behavioral")   # what train.py does
    run = clip_min.load_run("runs/behavioral")         # at the step Appendix C selected
    clip_min.score(run, "photo.jpg", ["A red circle on a grey background.", "The Varga medallion, 1923."])

docs/api.md documents each name below with examples; clip_min/api.py joins them up. A mistake a
user can fix raises clip_min.UserError with the one-line message the scripts print.
"""

from .api import (Attributions, Picture, Scores, attribute, curves, figure4, fit, load_base, load_run, preference, score,
                  toy_world)
from .errors import UserError
from .images import load_image, preprocess
from .model import CLIP, CLIPConfig
from .tokenizer import tokenize
from .train.config import TrainConfig
from .weights import load_clip, save_clip

__all__ = ["CLIP", "CLIPConfig", "TrainConfig", "UserError", "Attributions", "Picture", "Scores", "attribute", "curves",
           "figure4", "fit", "load_base", "load_clip", "load_image", "load_run", "preference", "preprocess", "save_clip",
           "score", "tokenize", "toy_world"]
