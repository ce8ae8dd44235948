"""``cadmr data download`` against a local HTTP server (no internet): resume, verify, unpack.

The server is python's http.server in a thread, bound to 127.0.0.1 on a free port, with a
handler that implements ``Range: bytes=N-`` (206 / 416) and records the requests it saw.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadmr.cli import main
from cadmr.data import download as dl
from cadmr.data.download import DownloadError, download_dataset, fetch
from cadmr.data.readers import load_dataset


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the bytes of ``server.files[path]`` with single open-ended range support."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404, "Not Found")
            return
        rng = self.headers.get("Range")
        start = 0
        if rng and self.server.ranges:  # type: ignore[attr-defined]
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut  # type: ignore[attr-defined]
        self.wfile.write(body[start:] if cut is None else body[start : start + cut])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files = {}  # type: ignore[attr-defined]
    srv.seen = []  # type: ignore[attr-defined]
    srv.ranges = True  # type: ignore[attr-defined]
    srv.cut = None  # type: ignore[attr-defined]  # bytes to send before hanging up, or all
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def base(srv: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/mmrec"


@pytest.fixture
def baby_zip(make, tmp_path: Path) -> bytes:
    """A zip of a tiny MMRec folder under a top-level ``baby/`` directory, as Drive zips it."""
    folder = make.mmrec(folder="src_baby", name="baby")
    (folder / "i_id_mapping.csv").write_text("asin\titemID\nB1\t0\n")
    path = tmp_path / "fixture.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"baby/{f.name}")
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_extracts(server, baby_zip: bytes, tmp_path: Path) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    dest = tmp_path / "data"
    folder = download_dataset(
        "baby", dest, base_url=base(server), sha256=sha(baby_zip), progress=False
    )
    assert folder == dest / "baby"
    assert sorted(p.name for p in folder.iterdir()) == ["baby.inter", "i_id_mapping.csv"]
    assert load_dataset(folder).n_users == 4
    assert not list(dest.glob("*.zip*"))  # archive and .part removed
    # already there: no second request
    download_dataset("baby", dest, base_url=base(server), sha256=sha(baby_zip), progress=False)
    assert len(server.seen) == 1


def test_resume_from_part_file(server, baby_zip: bytes, tmp_path: Path) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "baby.zip.part").write_bytes(baby_zip[:100])
    target = fetch(
        base(server) + "/baby.zip", dest / "baby.zip", sha256=sha(baby_zip), progress=False
    )
    assert server.seen == [("/mmrec/baby.zip", "bytes=100-")]
    assert target.read_bytes() == baby_zip
    # a complete part file: the server answers 416 and the file is accepted as it is
    (dest / "baby.zip.part").write_bytes(baby_zip)
    fetch(base(server) + "/baby.zip", dest / "again.zip", progress=False)
    (dest / "again.zip.part").write_bytes(baby_zip)
    fetch(base(server) + "/baby.zip", dest / "again.zip", sha256=sha(baby_zip), progress=False)
    assert server.seen[-1][1] == f"bytes={len(baby_zip)}-"
    assert (dest / "again.zip").read_bytes() == baby_zip


def test_server_without_range_support_restarts(server, baby_zip: bytes, tmp_path: Path) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    server.ranges = False
    (tmp_path / "baby.zip.part").write_bytes(b"garbage that must not stay in front")
    target = fetch(base(server) + "/baby.zip", tmp_path / "baby.zip", progress=False)
    assert target.read_bytes() == baby_zip


def test_checksum_mismatch_removes_part(server, baby_zip: bytes, tmp_path: Path) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("baby", dest, base_url=base(server), sha256="0" * 64, progress=False)
    assert not list(dest.iterdir())


def test_http_and_connection_errors(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(base(server) + "/nope.zip", tmp_path / "nope.zip", progress=False)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(DownloadError, match="cannot download"):
        fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)


def test_registry_and_missing_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert sorted(dl.REGISTRY) == ["baby", "clothing", "elec", "sports"]
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)
    with pytest.raises(DownloadError, match="Google Drive"):
        download_dataset("baby", tmp_path, progress=False)
    with pytest.raises(DownloadError, match="unknown dataset 'movies'; available: baby"):
        download_dataset("movies", tmp_path)


def test_unverified_download_warns(
    server, baby_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    monkeypatch.setenv(dl.BASE_URL_ENV, base(server))
    with pytest.warns(UserWarning, match="not verified"):
        download_dataset("baby", tmp_path, progress=False)
    assert (tmp_path / "baby" / "baby.inter").is_file()


def test_not_an_archive(server, tmp_path: Path) -> None:
    server.files["/mmrec/sports.zip"] = b"plain bytes"
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        download_dataset(
            "sports", tmp_path, base_url=base(server), sha256=sha(b"plain bytes"), progress=False
        )
    assert not (tmp_path / "sports").exists()


def test_cli_download(
    server, baby_zip: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    dest = tmp_path / "d"
    args = ["data", "download", "baby", "--dest", str(dest), "--quiet"]
    assert main([*args, "--base-url", base(server)]) == 0
    captured = capsys.readouterr()
    assert f"baby: {dest / 'baby'}" in captured.out
    assert "not verified" in captured.err
    assert main([*args, "--force", "--url", base(server) + "/x.zip"]) == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_a_cut_transfer_is_reported_and_resumed(server, baby_zip: bytes, tmp_path: Path) -> None:
    server.files["/mmrec/baby.zip"] = baby_zip
    server.cut = 100  # the server hangs up after 100 bytes of a longer body
    url = base(server) + "/baby.zip"
    with pytest.raises(DownloadError, match=f"cut at 100 of {len(baby_zip)} bytes"):
        fetch(url, tmp_path / "baby.zip", sha256=sha(baby_zip), progress=False)
    assert not (tmp_path / "baby.zip").exists()  # not renamed into place
    assert (tmp_path / "baby.zip.part").stat().st_size == 100  # kept for the resume
    server.cut = None
    fetch(url, tmp_path / "baby.zip", sha256=sha(baby_zip), progress=False)
    assert (tmp_path / "baby.zip").read_bytes() == baby_zip
    assert server.seen[-1][1] == "bytes=100-"


def test_a_malformed_checksum_is_refused_before_downloading(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="64 hexadecimal digits, got 'xyz'"):
        download_dataset("baby", tmp_path, base_url=base(server), sha256="xyz", progress=False)
    assert server.seen == []


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        member.size = len(data)
        t.addfile(member, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (_zip({"baby/big.bin": bytes(20 << 20)}), "refused above"),  # 20 MiB of zeros: ~1000x
        (_zip({"baby/notes.txt": b"no interactions here"}), "does not unpack to a dataset"),
        (_tar(tarfile.TarInfo("../evil"), b"x"), "cannot unpack"),  # the "data" filter refuses
        (_zip({"baby/x": b"1"})[:-30], "neither a zip nor a tar"),
    ],
    ids=["zip-bomb", "not-a-dataset", "tar-escaping-path", "truncated-zip"],
)
def test_a_bad_archive_is_one_line_and_leaves_nothing(
    server, tmp_path: Path, archive: bytes, message: str
) -> None:
    server.files["/mmrec/baby.zip"] = archive
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=message) as info:
        download_dataset("baby", dest, base_url=base(server), sha256=sha(archive), progress=False)
    assert "\n" not in str(info.value)
    assert not (dest / "baby").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".baby")]  # no extraction left
