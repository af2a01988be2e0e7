"""The two commands: train.py and eval.py at the top of the repository call these, and so do their
installed names, clip-min-train and clip-min-eval (pyproject.toml)."""
