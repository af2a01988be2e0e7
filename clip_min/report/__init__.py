"""Reports: the eval.py commands, the paper's tables and figures, HTML pages."""
