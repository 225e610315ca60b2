"""The CutSwap method, in its order: an ImageNet backbone (``backbones``) and its multilevel LayerCAM maps
(``saliency``), fuzzy c-means clusters of each map (``clustering``), patch pairs drawn in the top cluster
(``pairs``), and the negatives made from them beside CutPaste and Scar: tensor operations (``ops``), batch
transforms (``transforms``) and the per-method sampler (``sampler``); ``registry`` names every method.

Plain arguments only (arrays, tensors, numbers): no settings, stores or Prefect.
"""
