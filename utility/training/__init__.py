"""The glue floor's training room: the parts a training run is made of (replicas, precision,
schedule, hooks, cluster); utility/trainer.py puts them together for train_ssd.py."""
