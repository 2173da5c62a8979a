"""Evaluation: the Pascal VOC metric, ground truth, detections collection, reports and figures.

Imports only downward (dataset/, numpy, TensorFlow); knows nothing about training.
"""
