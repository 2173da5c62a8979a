"""Offline tools, run by hand, outside the training/evaluation library: weight converters
(tools.convert_vgg_weights, tools.convert_original_ssd) and the learning-curve plot.
"""
