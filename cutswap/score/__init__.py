"""Scoring test images: the Gaussian density on embeddings (``density``), anomaly maps (``localization``),
the metrics (``metrics``) and a trained detector loaded for use (``detector``).
"""
