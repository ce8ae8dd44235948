"""Download the public MMRec-format datasets: resumable, verified, extracted.

``cadmr data download NAME`` fetches one archive per dataset from a registry
(:data:`REGISTRY`), resuming an interrupted transfer from its ``.part`` file with an HTTP
``Range`` request, verifies its SHA-256, and unpacks it into ``<dest>/<NAME>/`` (zip or tar;
a single top-level folder inside the archive is flattened away).

Where the archives live (a decision, see docs/data.md): the MMRec authors publish Baby,
Sports, Clothing and Elec in one Google Drive folder (:data:`PUBLISHED_FOLDER`), which has no
stable per-file HTTP address. The registry therefore names each dataset's archive file
(``<name>.zip``) and the download URL is ``<base URL>/<archive>``: the base URL comes from
``--base-url``, else ``$CADMR_DOWNLOAD_BASE_URL``, else :data:`DEFAULT_BASE_URL` (unset),
or a full ``--url`` is given. Checksums are unknown here (no internet when this was
written): a registry entry with ``sha256=None`` is downloaded with a warning that it is not
verified, unless the caller passes ``sha256``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cadmr.data.dataset import DataError

__all__ = [
    "BASE_URL_ENV",
    "REGISTRY",
    "DownloadError",
    "RemoteDataset",
    "download_dataset",
    "fetch",
    "sha256_file",
]

BASE_URL_ENV = "CADMR_DOWNLOAD_BASE_URL"
PUBLISHED_FOLDER = "https://drive.google.com/drive/folders/13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
DEFAULT_BASE_URL: str | None = None
CHUNK = 1 << 20
# an archive may unpack to at most this many bytes, and at most RATIO times its own size: a
# 200 KB zip that claims 200 MiB (a "zip bomb") is refused before anything is written
MAX_UNPACKED = 256 << 30
MAX_RATIO = 100
_HEX64 = frozenset("0123456789abcdef")


class DownloadError(DataError):
    """A download failed (HTTP error, unreachable server, checksum mismatch, bad archive)."""


@dataclass(frozen=True)
class RemoteDataset:
    """One downloadable dataset.

    Attributes:
        name: Registry key and folder name.
        archive: File name of the archive under the base URL.
        sha256: Expected SHA-256 of the archive, or None when unknown (not verified).
        size: Expected size in bytes, or None when unknown.
        description: One line for listings.
    """

    name: str
    archive: str
    sha256: str | None = None
    size: int | None = None
    description: str = ""


REGISTRY: dict[str, RemoteDataset] = {
    d.name: d
    for d in (
        RemoteDataset("baby", "baby.zip", description="Amazon Baby 5-core, MMRec features"),
        RemoteDataset("sports", "sports.zip", description="Amazon Sports 5-core, MMRec features"),
        RemoteDataset(
            "clothing", "clothing.zip", description="Amazon Clothing 5-core, MMRec features"
        ),
        RemoteDataset("elec", "elec.zip", description="Amazon Electronics 5-core, MMRec features"),
    )
}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    target: str | os.PathLike[str],
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming and verifying.

    An existing ``.part`` file is continued with ``Range: bytes=<size>-``; a server that
    answers 200 instead of 206 (no range support) restarts it from zero, and 416 (nothing
    left to send) means the part file is already complete. The finished file is verified
    against ``sha256`` (when given) and only then renamed to ``target``.

    Raises:
        DownloadError: on an HTTP error status, an unreachable server, or a checksum mismatch
            (the ``.part`` file is then deleted, so the next run starts clean).
    """
    check_sha256(sha256)
    target = Path(target)
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "cadmr"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if have and resp.status != 206:
                have = 0  # the server ignored the range: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with (
                part.open("ab" if have else "wb") as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=target.name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
    except http.client.IncompleteRead:
        raise DownloadError(
            f"{url}: the transfer was cut at {part.stat().st_size} of {total} bytes; run the "
            "same command again to resume it"
        ) from None
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416 on a resume: the part file is already whole
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"{url}: cannot download ({reason}); run the same command again to resume"
        ) from None
    if sha256:
        got = sha256_file(part)
        if got.lower() != sha256.lower():
            part.unlink()
            raise DownloadError(
                f"{url}: checksum mismatch (expected sha256 {sha256}, got {got}); "
                "the partial file was removed, run again to download afresh"
            )
    part.replace(target)
    return target


def check_sha256(sha256: str | None) -> None:
    """Raise DownloadError unless ``sha256`` is None or 64 hex digits: checked before any
    byte is downloaded, not after the whole transfer."""
    if sha256 is not None and (len(sha256) != 64 or not set(sha256.lower()) <= _HEX64):
        raise DownloadError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")


def _check_unpacked_size(archive: Path, sizes: list[int]) -> None:
    """Refuse an archive whose members add up to more than MAX_UNPACKED bytes or MAX_RATIO
    times the archive's own size (as the archive's index says, before extracting)."""
    total, packed = sum(sizes), max(archive.stat().st_size, 1)
    if total > MAX_UNPACKED or total > MAX_RATIO * packed:
        raise DownloadError(
            f"{archive}: unpacks to {total} bytes from {packed} ({total / packed:.0f}x); "
            f"refused above {MAX_UNPACKED} bytes or {MAX_RATIO}x"
        )


def _extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest``, refusing paths that escape it, archives
    that unpack to far more than they weigh, and content that is not a dataset; ``dest``
    appears only once it holds a dataset that loads."""
    from cadmr.data.readers import load_dataset  # the readers import this module's error

    tmp = dest.with_name(f".{dest.name}.extract")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    _check_unpacked_size(archive, [i.file_size for i in z.infolist()])
                    for member in z.namelist():
                        resolved = (tmp / member).resolve()
                        if not resolved.is_relative_to(tmp.resolve()):
                            raise DownloadError(f"{archive}: unsafe path {member!r} in the archive")
                    z.extractall(tmp)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as t:
                    _check_unpacked_size(archive, [m.size for m in t.getmembers()])
                    t.extractall(tmp, filter="data")
            else:
                raise DownloadError(f"{archive}: neither a zip nor a tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            # a corrupt archive, or a tar member the "data" filter refuses (absolute path,
            # link out of the folder, device file)
            raise DownloadError(f"{archive}: cannot unpack: {e}") from None
        entries = [p for p in tmp.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        try:
            load_dataset(root)
        except DataError as e:
            raise DownloadError(f"{archive} does not unpack to a dataset: {e}") from None
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(
    name: str,
    dest: str | os.PathLike[str],
    *,
    url: str | None = None,
    base_url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download and unpack a registered dataset into ``<dest>/<name>``.

    Args:
        name: A key of :data:`REGISTRY`.
        dest: The data directory (the dataset lands in ``dest/name``).
        url: Full archive URL (overrides the base URL).
        base_url: Base URL holding ``<archive>``; default ``$CADMR_DOWNLOAD_BASE_URL``.
        sha256: Expected checksum (overrides the registry's).
        force: Download again even if ``dest/name`` exists.
        keep_archive: Keep the archive next to the folder after unpacking.
        progress: Show a tqdm byte counter.

    Returns:
        The dataset folder.

    Raises:
        DownloadError: for an unknown name, no URL, or any download/extraction failure.
    """
    if name not in REGISTRY:
        raise DownloadError(f"unknown dataset {name!r}; available: {', '.join(sorted(REGISTRY))}")
    entry = REGISTRY[name]
    folder = Path(dest).expanduser() / name
    if folder.is_dir() and any(folder.iterdir()) and not force:
        return folder
    if url is None:
        base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if not base:
            raise DownloadError(
                f"no download address for {name!r}: the MMRec datasets are published in a "
                f"Google Drive folder ({PUBLISHED_FOLDER}) without stable file URLs. Download "
                f"{entry.archive} from there, or pass --url, or --base-url / ${BASE_URL_ENV} "
                f"naming a mirror that serves {entry.archive}"
            )
        url = base.rstrip("/") + "/" + entry.archive
    expected = sha256 or entry.sha256
    check_sha256(expected)
    if expected is None:
        warnings.warn(
            f"no known sha256 for {name!r}: the download is not verified (pass --sha256)",
            stacklevel=2,
        )
    archive = fetch(url, folder.parent / entry.archive, sha256=expected, progress=progress)
    _extract(archive, folder)
    if not keep_archive:
        archive.unlink()
    return folder
