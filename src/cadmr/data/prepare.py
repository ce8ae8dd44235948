"""From raw interactions, metadata and images to an MMRec-format dataset folder.

The pipeline of ``cadmr data prepare`` (docs/protocol.md, "When we split raw data
ourselves"; design notes in docs/data.md):

1. Stream the interactions (:mod:`cadmr.data.raw`); a repeated (user, item) pair is kept once.
2. k-core filter iterated to a fixpoint (:func:`k_core`): drop users and items with fewer
   than ``k`` interactions, recount, repeat until nothing changes.
3. Dense re-indexing: users and items sorted by raw id get ``0..n-1``; the mappings are
   written as ``u_id_mapping.csv`` (``user_id``, ``userID``) and ``i_id_mapping.csv``
   (``asin``, ``itemID``), tab separated like the published MMRec folders.
4. The protocol's seeded per-user random split (:func:`cadmr.data.split.split_per_user`).
5. ``<name>.inter`` (``userID itemID [rating] [timestamp] x_label``), then one
   ``<modality>_feat.npy`` per feature source: text from metadata, images, precomputed files
   (:mod:`cadmr.data.features`). Items without an input get the mean vector; counted.
6. The folder is written under a temporary name, loaded back with the project's reader
   (:func:`cadmr.data.readers.read_mmrec`) and only then renamed into place, so a failed run
   leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cadmr.data.dataset import DataError, Dataset
from cadmr.data.raw import Interactions, read_interactions, read_item_texts
from cadmr.data.readers import read_mmrec
from cadmr.data.split import split_per_user

__all__ = ["KCoreResult", "PrepareResult", "k_core", "prepare_dataset"]

REPORT_FILE = "prepare.json"


@dataclass(frozen=True)
class KCoreResult:
    """Outcome of :func:`k_core`.

    Attributes:
        keep: Boolean mask over the input interactions, True for those in the k-core.
        passes: Filtering passes that removed something (0: the input already was a k-core).
    """

    keep: np.ndarray
    passes: int


def k_core(users: np.ndarray, items: np.ndarray, k: int = 5) -> KCoreResult:
    """Iterate the k-core filter to its fixpoint.

    Each pass counts, over the interactions still kept, each user's and each item's
    interactions, and drops every interaction of a user or an item with fewer than ``k``.
    It stops when a pass drops nothing, so every remaining user and item has at least ``k``
    interactions (possibly none remain).

    Args:
        users: Non-negative integer user codes, shape (m,).
        items: Non-negative integer item codes, shape (m,).
        k: Minimum interactions per user and per item (1 keeps everything).

    Returns:
        The kept-interaction mask and the number of passes that removed something.
    """
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)  # (m,)
    n_u = int(users.max()) + 1 if len(users) else 0
    n_i = int(items.max()) + 1 if len(items) else 0
    passes = 0
    while True:
        u_cnt = np.bincount(users[keep], minlength=n_u)  # (n_u,)
        i_cnt = np.bincount(items[keep], minlength=n_i)  # (n_i,)
        new = keep & (u_cnt[users] >= k) & (i_cnt[items] >= k)
        if np.array_equal(new, keep):
            return KCoreResult(keep=keep, passes=passes)
        keep = new
        passes += 1


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` wrote.

    Attributes:
        path: The dataset folder.
        name: Dataset name (the ``.inter`` file stem).
        raw: Counts of the input: interactions after de-duplication, users, items, and
            duplicates dropped.
        k: The core size.
        k_core_passes: Filter passes that removed something.
        users: Users after filtering.
        items: Items after filtering.
        interactions: Interactions per split (train/valid/test).
        features: Modality -> {"dim", "mean_filled", and source-specific counts}.
        seconds: Wall time of the whole run.
    """

    path: Path
    name: str
    raw: dict[str, int]
    k: int
    k_core_passes: int
    users: int
    items: int
    interactions: dict[str, int]
    features: dict[str, dict[str, object]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def prepare_dataset(
    interactions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    metadata: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    precomputed: Mapping[str, str | os.PathLike[str]] | None = None,
    k: int = 5,
    seed: int = 0,
    text_model: object | str | os.PathLike[str] | None = "all-MiniLM-L6-v2",
    image_model: object | str | os.PathLike[str] | None = None,
    fmt: str = "auto",
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[PrepareResult, Dataset]:
    """Build an MMRec-format dataset folder from raw files (see the module docstring).

    Args:
        interactions: Amazon reviews JSON lines or a CSV/TSV log (gz or not).
        out: The dataset folder to create.
        name: Dataset name (default: the folder name).
        metadata: Item metadata (Amazon JSON/Python-literal lines, or a CSV/TSV item table)
            for text features; needs ``text_model``.
        images: Folder of ``<item id>.<ext>`` images or an ``item,path`` listing; needs
            ``image_model``.
        precomputed: Modality -> feature file keyed by raw item id (``.b``, ``.npy`` +
            ``.ids.txt``, ``.npz``, ``.csv``/``.tsv``).
        k: Core size of the filter.
        seed: Seed of the split.
        text_model: A sentence-transformers model or folder (default all-MiniLM-L6-v2);
            None skips text features even when metadata is given.
        image_model: An image encoder (callable) or a ResNet state-dict file.
        fmt: Interaction format: ``"auto"``, ``"amazon"`` or ``"csv"``.
        batch_size: Batch size of the feature encoders.
        overwrite: Replace an existing non-empty ``out`` folder.
        progress: Show tqdm progress bars.

    Returns:
        The report and the dataset loaded back from ``out``.

    Raises:
        DataError: on malformed input, an empty k-core, a modality given twice, images
            without a model, or an existing output folder (without ``overwrite``).
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    name = name or out.name
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DataError(f"{out}: already exists and is not empty; choose another --out")
    sources = _FeatureSources(
        metadata=metadata,
        images=images,
        precomputed=dict(precomputed or {}),
        text_model=text_model,
        image_model=image_model,
        batch_size=batch_size,
        progress=progress,
    )
    table = _SplitTable.build(interactions, k, seed, fmt=fmt, progress=progress)
    result = _write_dataset(out, name, table, sources, seed, t0)
    return result, read_mmrec(out, name)


def _write_dataset(
    out: Path, name: str, table: _SplitTable, sources: _FeatureSources, seed: int, t0: float
) -> PrepareResult:
    """Steps 5-6: write the folder under a temporary name (tables, features, the report
    :data:`REPORT_FILE` timed from ``t0``), check that it loads, then move it to ``out``."""
    with _staging_folder(out) as tmp:
        table.write(tmp, name)
        result = table.result(out, name, features=sources.write(table.item_ids, tmp))
        read_mmrec(tmp, name)  # what we wrote must load with the project's reader
        result.seconds = time.perf_counter() - t0
        (tmp / REPORT_FILE).write_text(
            json.dumps({**result.to_dict(), "seed": seed}, indent=2) + "\n", encoding="utf-8"
        )
    return result


@contextmanager
def _staging_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; rename it to ``out`` (replacing what is
    there) when the block succeeds, delete it when the block raises."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class _SplitTable:
    """Steps 1-4 of the pipeline, in memory: the raw interactions, their k-core, densely
    re-indexed and split per user.

    Attributes:
        inter: The raw interactions as read.
        k: The core size.
        core: The k-core filter's outcome over ``inter``.
        frame: ``userID``, ``itemID``, [``rating``], [``timestamp``], ``x_label``; sorted by
            user, then item.
        user_ids: Raw user id of each dense ``userID``.
        item_ids: Raw item id of each dense ``itemID``.
    """

    inter: Interactions
    k: int
    core: KCoreResult
    frame: pd.DataFrame
    user_ids: list[str]
    item_ids: list[str]

    @classmethod
    def build(
        cls, path: str | os.PathLike[str], k: int, seed: int, *, fmt: str, progress: bool
    ) -> _SplitTable:
        """Read ``path``, keep its k-core, re-index it densely and split it with ``seed``.

        Raises:
            DataError: on malformed input or when no interaction survives the filter.
        """
        inter = read_interactions(path, fmt=fmt, progress=progress)
        core = k_core(inter.users, inter.items, k)
        if not core.keep.any():
            raise DataError(
                f"{path}: no interaction survives the {k}-core filter "
                f"({len(inter)} interactions, {len(inter.user_ids)} users, "
                f"{len(inter.item_ids)} items); try a smaller --k"
            )
        frame, user_ids, item_ids = _reindex(inter, core.keep)
        frame["x_label"] = split_per_user(
            frame["userID"].to_numpy(), frame["itemID"].to_numpy(), np.random.default_rng(seed)
        )
        frame = frame.sort_values(["userID", "itemID"], kind="stable")
        return cls(inter, k, core, frame, user_ids, item_ids)

    def write(self, folder: Path, name: str) -> None:
        """Write ``<name>.inter`` and the two id mappings into ``folder``."""
        self.frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
        pd.DataFrame({"user_id": self.user_ids, "userID": np.arange(len(self.user_ids))}).to_csv(
            folder / "u_id_mapping.csv", sep="\t", index=False
        )
        pd.DataFrame({"asin": self.item_ids, "itemID": np.arange(len(self.item_ids))}).to_csv(
            folder / "i_id_mapping.csv", sep="\t", index=False
        )

    def result(self, out: Path, name: str, features: dict[str, dict[str, object]]) -> PrepareResult:
        """The run's report (without its wall time) for the folder ``out``."""
        labels = self.frame["x_label"].to_numpy()
        return PrepareResult(
            path=out,
            name=name,
            raw={
                "interactions": len(self.inter),
                "users": len(self.inter.user_ids),
                "items": len(self.inter.item_ids),
                "duplicates_dropped": int(self.inter.info["duplicates_dropped"]),  # type: ignore[arg-type]
            },
            k=self.k,
            k_core_passes=self.core.passes,
            users=len(self.user_ids),
            items=len(self.item_ids),
            interactions={
                s: int((labels == c).sum()) for c, s in enumerate(("train", "valid", "test"))
            },
            features=features,
        )


def _reindex(inter: Interactions, keep: np.ndarray) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Dense ids for the kept interactions: users and items sorted by raw id."""
    u_codes, u_inv = np.unique(inter.users[keep], return_inverse=True)
    i_codes, i_inv = np.unique(inter.items[keep], return_inverse=True)
    u_raw = np.array([inter.user_ids[c] for c in u_codes], dtype=object)
    i_raw = np.array([inter.item_ids[c] for c in i_codes], dtype=object)
    u_order = np.argsort(u_raw.astype(str), kind="stable")  # new id -> position in u_codes
    i_order = np.argsort(i_raw.astype(str), kind="stable")
    u_new = np.empty_like(u_order)
    u_new[u_order] = np.arange(len(u_order))
    i_new = np.empty_like(i_order)
    i_new[i_order] = np.arange(len(i_order))
    frame = pd.DataFrame({"userID": u_new[u_inv], "itemID": i_new[i_inv]})
    if inter.ratings is not None:
        r = inter.ratings[keep]
        frame["rating"] = r.astype(np.int64) if np.all(r == np.round(r)) else r
    if inter.timestamps is not None:
        frame["timestamp"] = inter.timestamps[keep]
    return frame, [str(x) for x in u_raw[u_order]], [str(x) for x in i_raw[i_order]]


@dataclass
class _FeatureSources:
    """Step 5's inputs: where each modality's features come from and how to encode them.

    Creating one checks the request (images need a model, no modality twice) and loads the
    models given by name or path; :meth:`write` makes the features.
    """

    metadata: str | os.PathLike[str] | None
    images: str | os.PathLike[str] | None
    precomputed: dict[str, str | os.PathLike[str]]
    text_model: object | str | os.PathLike[str] | None
    image_model: object | str | os.PathLike[str] | None
    batch_size: int
    progress: bool

    def __post_init__(self) -> None:
        """Reject images without a model and a modality given twice; then load the models."""
        if self.images is not None and self.image_model is None:
            raise DataError(
                "images were given but no image model; pass a ResNet weights file "
                "(e.g. torchvision's resnet50-0676ba61.pth)"
            )
        planned = [*self.precomputed]
        if self.metadata is not None and self.text_model is not None:
            planned.append("text")
        if self.images is not None:
            planned.append("image")
        twice = sorted({m for m in planned if planned.count(m) > 1})
        if twice:
            raise DataError(f"modality {twice[0]!r} is given twice (precomputed and computed)")
        self._load_models()

    def _load_models(self) -> None:
        """Replace models given as a name or path by the loaded models, failing fast (missing
        extra, bad path) before a large file is read."""
        if (
            self.metadata is not None and isinstance(self.text_model, str | os.PathLike)
        ) or isinstance(self.image_model, str | os.PathLike):
            from cadmr.data import features as F  # imports torch: only when features are made

            if self.metadata is not None and isinstance(self.text_model, str | os.PathLike):
                self.text_model = F.load_text_model(self.text_model)
            if self.images is not None and isinstance(self.image_model, str | os.PathLike):
                self.image_model = F.load_image_encoder(self.image_model)

    def write(self, item_ids: list[str], folder: Path) -> dict[str, dict[str, object]]:
        """Compute and save every requested ``<modality>_feat.npy``; return per-modality counts."""
        from cadmr.data import features as F  # imports torch: only when features are made

        report: dict[str, dict[str, object]] = {}
        if self.metadata is not None and self.text_model is not None:
            texts = read_item_texts(self.metadata, wanted=item_ids, progress=self.progress)
            present = np.array([bool(texts.get(i)) for i in item_ids])
            if not present.any():
                raise DataError(
                    f"{self.metadata}: no metadata for any of the {len(item_ids)} items"
                )
            have = [texts[i] for i, ok in zip(item_ids, present, strict=True) if ok]
            emb = F.encode_texts(
                have, self.text_model, batch_size=self.batch_size, progress=self.progress
            )
            mat = np.zeros((len(item_ids), emb.shape[1]), dtype=np.float32)
            mat[present] = emb
            filled = F.mean_fill(mat, present)
            np.save(folder / "text_feat.npy", mat)
            report["text"] = {"dim": int(mat.shape[1]), "mean_filled": filled}
        if self.images is not None:
            found = F.find_images(self.images)
            paths = [found.get(i) for i in item_ids]
            mat, filled, unreadable = F.encode_images(
                paths,
                self.image_model,  # type: ignore[arg-type]
                batch_size=max(1, self.batch_size // 2),
                progress=self.progress,
            )
            np.save(folder / "image_feat.npy", mat)
            report["image"] = {
                "dim": int(mat.shape[1]),
                "mean_filled": filled,
                "unreadable": unreadable,
            }
        for mod, path in self.precomputed.items():
            if not mod.isidentifier():
                raise DataError(f"modality name {mod!r} must be a word (it names <mod>_feat.npy)")
            mat, filled = F.read_precomputed(path, item_ids, progress=self.progress)
            np.save(folder / f"{mod}_feat.npy", mat)
            report[mod] = {"dim": int(mat.shape[1]), "mean_filled": filled, "source": str(path)}
        return report
