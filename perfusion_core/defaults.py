"""Defaults of the method that several layers show: the gate while training and at inference, and
how many prompts C is estimated from.

Written once here (plain numbers, no torch) because the concept's metadata, the training settings,
the nodes' widgets, the test harness and the shipped workflows all show them and must not drift.
"""

TRAIN_BIAS = 0.75  # β while training
TRAIN_TEMPERATURE = 0.10  # τ while training
INFERENCE_BIAS = 0.70  # β at generation with the local key lock (the paper's setting)
INFERENCE_BIAS_GLOBAL = 0.50  # β at generation with the global key lock
INFERENCE_TEMPERATURE = 0.15  # τ at generation
COVARIANCE_PROMPTS = 2000  # prompts the text-encoding covariance C is estimated from
