"""Checkpoints and model directories, one job per module.

* lock.py: the trainer lock (one trainer per model directory).
* files.py: checkpoint hygiene (leftovers, unreadable and non-finite checkpoints, full disk).
* params_file.py: params.json (name, save, load, what defines a model, identity checks).
* locate.py: the one checkpoint locator (a directory, prefix or file to a prefix).
* restore.py: restoring pretrained weights into the graph; a checkpoint's model identity.
* original_layout.py: checkpoints of the original SSD.TensorFlow code in this project's names.
"""
