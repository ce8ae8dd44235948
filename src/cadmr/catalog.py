"""Every registered model's name, class and one-line summary, without importing torch.

(Outside the ``cadmr.models`` package on purpose: importing anything inside it runs the
package's ``__init__``, which imports every model and torch.)

``cadmr models`` only lists names and summaries; importing the model modules (and torch
with them) would cost it about a second. The summaries are read from the source files with
``ast``: a class's ``summary`` attribute where it sets one, else its module's docstring's
first line (what ``Recommender.summary`` documents). ``tests/models/test_catalog.py``
checks that this table and ``cadmr.models.MODELS`` name the same classes.
"""

from __future__ import annotations

import ast
from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"

# name -> (module, class), in the order of cadmr.models.MODELS
CATALOG: dict[str, tuple[str, str]] = {
    "pop": ("cadmr.models.popularity", "Popularity"),
    "ease": ("cadmr.models.ease", "EASE"),
    "bpr": ("cadmr.models.bpr", "BPRMF"),
    "lightgcn": ("cadmr.models.lightgcn", "LightGCN"),
    "vbpr": ("cadmr.models.vbpr", "VBPR"),
    "kernel_ae": ("cadmr.models.kernel_ae", "KernelAE"),
    "cadmr": ("cadmr.models.cadmr", "CADMR"),
    "cadmr_paper": ("cadmr.models.cadmr", "CADMRPaper"),
    "dragon": ("cadmr.models.dragon", "DRAGON"),
    "bm3": ("cadmr.models.bm3", "BM3"),
    "slmrec": ("cadmr.models.slmrec", "SLMRec"),
    "lattice": ("cadmr.models.lattice", "LATTICE"),
    "freedom": ("cadmr.models.freedom", "FREEDOM"),
    "addvae": ("cadmr.models.addvae", "ADDVAE"),
    "content_knn": ("cadmr.models.content_knn", "ContentKNN"),
}


def summaries() -> dict[str, str]:
    """name -> one-line summary, read from the model modules' source."""
    trees: dict[str, ast.Module] = {}
    out: dict[str, str] = {}
    for name, (module, cls) in CATALOG.items():
        if module not in trees:
            # the file itself: find_spec would import the package, and with it torch
            source = MODELS_DIR / (module.removeprefix("cadmr.models.") + ".py")
            trees[module] = ast.parse(source.read_text(encoding="utf-8"))
        tree = trees[module]
        out[name] = _class_summary(tree, cls) or (ast.get_docstring(tree) or "").splitlines()[0]
    return out


def _class_summary(tree: ast.Module, cls: str) -> str | None:
    """The string a class assigns to ``summary`` in its body, if any."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for stmt in node.body:
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
                if isinstance(target, ast.Name) and target.id == "summary":
                    value = ast.literal_eval(stmt.value)
                    return value if isinstance(value, str) else None
    return None
