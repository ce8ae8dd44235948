"""`cadmr serve` (issue 20): every endpoint and every bad request, on a real uvicorn server
bound to a free loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from cadmr.cli import main  # noqa: E402
from cadmr.data.synthetic import make_synthetic  # noqa: E402
from cadmr.serve import create_app, describe_checkpoint  # noqa: E402
from cadmr.train.checkpoint import load_checkpoint, load_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


def _train(root: Path, model: str, *sets: str) -> Path:
    out = root / model
    args = ["train", "-m", model, "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    for setting in ("train.epochs=2", *sets):
        args += ["--set", setting]
    assert main(args) == 0
    return out / "best.pt"


def _serve(checkpoint: Path, dataset) -> Iterator[str]:
    model, _ = load_model(checkpoint, dataset)
    app = create_app(
        model, dataset, describe_checkpoint(checkpoint, load_checkpoint(checkpoint), dataset)
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def bpr(tmp_path_factory, tiny) -> Iterator[str]:
    yield from _serve(_train(tmp_path_factory.mktemp("serve"), "bpr"), tiny)


@pytest.fixture(scope="module")
def cadmr_url(tmp_path_factory, tiny) -> Iterator[str]:
    small = ("params.hidden=[16,16]", "params.latent_dim=8", "params.modality_dim=8")
    yield from _serve(_train(tmp_path_factory.mktemp("serve"), "cadmr", *small), tiny)


def _call(url: str, body: object | bytes | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_model_and_recommend(bpr, tiny):
    assert _call(bpr + "/health") == (200, {"status": "ok"})
    status, meta = _call(bpr + "/model")
    assert status == 200 and meta["model"] == "bpr" and meta["users"] == tiny.n_users
    assert meta["dataset_fingerprint"] == tiny.fingerprint() and "recall@20" in meta["test"]
    status, one = _call(bpr + "/recommend?user=3&k=4")
    assert status == 200 and one["user"] == "3" and len(one["items"]) == 4
    seen = set(map(str, tiny.train[3].indices))
    assert not seen & {r["item"] for r in one["items"]}
    scores = [r["score"] for r in one["items"]]
    assert scores == sorted(scores, reverse=True)
    status, many = _call(bpr + "/recommend", {"users": [3, "5"], "k": 4})
    assert status == 200 and [r["user"] for r in many["results"]] == ["3", "5"]
    batch = many["results"][0]  # batch and single agree (to float rounding: other shapes)
    assert [r["item"] for r in batch["items"]] == [r["item"] for r in one["items"]]
    assert np.allclose([r["score"] for r in batch["items"]], scores)
    status, most = _call(bpr + "/recommend?user=3&k=1000")
    assert status == 200 and len(most["items"]) == tiny.n_items - len(seen)  # no padding


def test_explain_for_cadmr(cadmr_url, tiny):
    status, exp = _call(cadmr_url + "/explain?item=2&top=3")
    assert status == 200 and len(exp["attended"]) == 3
    assert np.isclose(exp["uniform_weight"], 1 / tiny.n_items)
    status, exp = _call(cadmr_url + "/explain?user=1&top=2")
    assert status == 200 and exp["recommended"] and len(exp["attended"]) == 2


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/recommend?user=999999", None, 404, "user '999999' is not"),
        ("/recommend?user=alice", None, 404, "user 'alice' is not"),
        ("/recommend?user=1&k=0", None, 422, "k must be in 1..1000"),
        ("/recommend?user=1&k=many", None, 422, "k"),
        ("/recommend", None, 422, "user"),
        ("/recommend", b"{not json", 422, ""),
        ("/recommend", {"users": []}, 422, "users"),
        ("/recommend", {"users": [1], "k": -3}, 422, "k"),
        ("/recommend", {"users": [1, 999999]}, 404, "user '999999'"),
        ("/recommend", {"k": 3}, 422, "users"),
        ("/explain?item=1", None, 409, "bpr has no attention to explain"),
        ("/nowhere", None, 404, ""),
    ],
)
def test_bad_requests_are_4xx_json(bpr, path, body, status, message):
    got, payload = _call(bpr + path, body)
    assert got == status, payload
    text = json.dumps(payload)
    assert message in text and "Traceback" not in text


def test_explain_bad_requests(cadmr_url):
    assert _call(cadmr_url + "/explain")[0] == 422
    assert _call(cadmr_url + "/explain?item=1&user=1")[0] == 422
    status, payload = _call(cadmr_url + "/explain?item=99999")
    assert status == 404 and "item '99999'" in payload["error"]


@pytest.fixture(scope="module")
def ease_url(tmp_path_factory, tiny) -> Iterator[str]:
    yield from _serve(_train(tmp_path_factory.mktemp("serve"), "ease"), tiny)


def test_a_new_user_is_folded_in_where_the_model_can(ease_url, bpr, tiny):
    have = [str(i) for i in tiny.train[2].indices]
    status, new = _call(ease_url + "/recommend/new", {"items": have, "k": 5})
    assert status == 200 and len(new["items"]) == 5
    assert not set(have) & {r["item"] for r in new["items"]}
    _, known = _call(ease_url + "/recommend?user=2&k=5")  # EASE: the same user, same ranking
    assert [r["item"] for r in new["items"]] == [r["item"] for r in known["items"]]
    status, payload = _call(bpr + "/recommend/new", {"items": have})
    assert status == 409 and "cannot score a user it was not trained on" in payload["error"]
    assert _call(ease_url + "/recommend/new", {"items": ["99999"]})[0] == 404
    assert _call(ease_url + "/recommend/new", {"items": []})[0] == 422


@pytest.mark.parametrize("server", ["bpr", "ease_url", "cadmr_url"])
def test_similar_items(request, server):
    url = request.getfixturevalue(server)
    status, sim = _call(url + "/similar?item=4&k=3")
    assert status == 200 and sim["item"] == "4" and len(sim["similar"]) == 3
    assert "4" not in {r["item"] for r in sim["similar"]}
    cos = [r["cosine"] for r in sim["similar"]]
    assert cos == sorted(cos, reverse=True) and all(-1.0001 <= c <= 1.0001 for c in cos)
    assert _call(url + "/similar?item=99999")[0] == 404
    assert _call(url + "/similar?item=4&k=0")[0] == 422
