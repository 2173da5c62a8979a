"""The glue floor's training room: what train_ssd.py runs (run.py)."""
