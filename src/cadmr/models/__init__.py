"""Model registry: an explicit name -> class mapping (no reflection on file names)."""

from __future__ import annotations

from cadmr.errors import CadmrKeyError
from cadmr.models.addvae import ADDVAE
from cadmr.models.base import ClosedFormRecommender, Recommender, TorchRecommender
from cadmr.models.bm3 import BM3
from cadmr.models.bpr import BPRMF
from cadmr.models.cadmr import CADMR, CADMRPaper
from cadmr.models.content_knn import ContentKNN
from cadmr.models.dragon import DRAGON
from cadmr.models.ease import EASE
from cadmr.models.freedom import FREEDOM
from cadmr.models.kernel_ae import KernelAE
from cadmr.models.lattice import LATTICE
from cadmr.models.lightgcn import LightGCN
from cadmr.models.popularity import Popularity
from cadmr.models.slmrec import SLMRec
from cadmr.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {
    m.name: m
    for m in (
        Popularity,
        EASE,
        BPRMF,
        LightGCN,
        VBPR,
        KernelAE,
        CADMR,
        CADMRPaper,
        DRAGON,
        BM3,
        SLMRec,
        LATTICE,
        FREEDOM,
        ADDVAE,
        ContentKNN,
    )
}


def get_model_class(name: str) -> type[Recommender]:
    """The registered class for ``name``; a clear error lists the valid names."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise CadmrKeyError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}"
        ) from None


__all__ = [
    "MODELS",
    "ClosedFormRecommender",
    "Recommender",
    "TorchRecommender",
    "get_model_class",
]
