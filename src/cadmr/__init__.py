"""CADMR: cross-attention and disentangled learning for multimodal recommendation.

The toolkit around it: a validated data layer, an honest full-ranking protocol, reference
and multimodal baselines, one generic trainer, and a command-line interface (``cadmr``).
"""

__version__ = "0.1.0"
