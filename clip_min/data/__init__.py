"""Data sets in their released formats: Concadia, zero-shot transfer tasks, word norms, ratings, the toy world."""
