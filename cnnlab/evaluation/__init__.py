"""Run reports, their plots, W&B views and sweep summaries."""
