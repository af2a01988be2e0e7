"""Training: the run configuration, the fine-tuning loop, checkpoints, the selected step, run folders."""
