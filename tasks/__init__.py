"""Data, metrics and offline assets for the entry scripts (run_glue.py, run_image.py, run_clip.py)."""
