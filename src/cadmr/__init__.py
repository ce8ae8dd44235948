"""CADMR: cross-attention and disentangled learning for multimodal recommendation.

The toolkit around it: a validated data layer, an honest full-ranking protocol, reference
and multimodal baselines, one generic trainer, and a command-line interface (``cadmr``).
"""

__version__ = "0.1.0"

__all__ = ["fit", "load", "save"]


def __getattr__(name: str):  # the API on first use: `import cadmr` stays light (no torch)
    if name in __all__:
        from cadmr import api

        return getattr(api, name)
    raise AttributeError(f"module 'cadmr' has no attribute {name!r}")
