"""``cadmr serve CHECKPOINT``: a trained model behind HTTP (FastAPI on uvicorn).

The model and its dataset load once, at start. Endpoints (ids are the dataset's raw ids
where it has mappings, dense integers otherwise; see cadmr.data.ids):

- ``GET /health``: ``{"status": "ok"}``.
- ``GET /model``: model, dataset, its fingerprint, sizes, and the run's metrics when the
  checkpoint sits in its run folder.
- ``GET /recommend?user=ID&k=10&exclude_valid=false``: one user's top-k.
- ``POST /recommend`` ``{"users": [ID, ...], "k": 10, "exclude_valid": false}``: a batch.
- ``POST /recommend/new`` ``{"items": [ID, ...], "k": 10}``: a user the model was not
  trained on, from the items they have (fold-in: EASE and popularity; 409 for models with
  per-user parameters).
- ``GET /similar?item=ID&k=10``: the items whose representations (``item_vectors``) are
  nearest by cosine: embeddings (BPR, the graph models), the autoencoders' item codes,
  EASE's weight rows.
- ``GET /explain?item=ID`` or ``?user=ID``: what CADMR's attention looked at (CADMR only).

Bad requests (unknown ids, k out of range, malformed JSON, explain on a model without
attention) get a 4xx JSON ``{"error": "..."}``, never a 500 or a traceback. Scoring holds a
lock: torch runs one request's ranking at a time, on all its threads; the model's scoring
caches (item encodings) are built once at start. Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cadmr.data.dataset import Dataset
from cadmr.data.ids import IdMaps
from cadmr.models.base import Recommender

MAX_K = 1000
MAX_USERS = 10_000  # per POST /recommend


class BatchRequest(BaseModel):
    users: list[str | int] = Field(min_length=1, max_length=MAX_USERS)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_valid: bool = False


class NewUserRequest(BaseModel):
    items: list[str | int] = Field(min_length=1, max_length=MAX_K * 10)
    k: int = Field(10, ge=1, le=MAX_K)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(model: Recommender, dataset: Dataset, meta: dict[str, Any]) -> FastAPI:
    """The service for one loaded model; ``meta`` is what ``GET /model`` reports."""
    app = FastAPI(title="cadmr", docs_url=None, redoc_url=None)
    service = _Service(model, dataset, meta)
    _add_error_handlers(app)
    _add_info_routes(app, meta)
    _add_recommend_routes(app, service)
    _add_item_routes(app, service)
    return app


def _check_range(name: str, value: int) -> None:
    """Reject a ``k`` or ``top`` query parameter outside ``1..MAX_K`` (422)."""
    if not 1 <= value <= MAX_K:
        raise BadRequest(f"{name} must be in 1..{MAX_K}, got {value}", 422)


@contextmanager
def _unknown_id_is_404() -> Iterator[None]:
    """Turn the KeyError of an unknown raw id (cadmr.data.ids) into a 404 with its message."""
    try:
        yield
    except KeyError as e:
        raise BadRequest(e.args[0], 404) from None


class _Service:
    """What the routes do, apart from HTTP: raw-id translation and scoring under one lock.

    The model's scoring caches are built here, once: the model never changes while it is
    served.
    """

    def __init__(self, model: Recommender, dataset: Dataset, meta: dict[str, Any]) -> None:
        self.model, self.dataset, self.meta = model, dataset, meta
        self.ids = IdMaps.for_dataset(dataset)
        self.lock = threading.Lock()
        model.prepare_scoring()

    def dense_user(self, token: str | int) -> int:
        """The dense id of a raw user id (404 when unknown)."""
        with _unknown_id_is_404():
            return self.ids.user_dense(str(token))

    def ranked(self, users: list[int], k: int, exclude_valid: bool) -> list[dict[str, Any]]:
        """Each user's top-k as ``{"user", "items": [{"item", "score"}, ...]}``."""
        with self.lock:
            items, scores = self.model.recommend(
                np.asarray(users),
                k,
                exclude=self.dataset.valid if exclude_valid else None,
                prepare=False,
            )
        out = []
        for u, its, scs in zip(users, items, scores, strict=True):
            recs = [
                self.ids.item_entry(int(i), score=float(s))
                for i, s in zip(its, scs, strict=True)
                if i >= 0
            ]
            out.append({"user": self.ids.user_raw(u), "items": recs})
        return out

    def recommend_new(self, tokens: list[str | int], k: int) -> dict[str, Any]:
        """Top-k for a user the model was not trained on, who has the items ``tokens``."""
        with _unknown_id_is_404():
            items = np.array([self.ids.item_dense(str(t)) for t in tokens], dtype=np.int64)
        with self.lock:
            scores = self.model.fold_in(items)
        if scores is None:
            raise BadRequest(
                f"{self.meta['model']} cannot score a user it was not trained on (per-user "
                "parameters); EASE and popularity can",
                409,
            )
        scores = scores.detach().cpu().clone()
        scores[torch.as_tensor(items)] = -torch.inf  # what they already have
        top = torch.topk(scores, min(k, len(scores) - len(set(items.tolist()))))
        return {
            "items": [
                self.ids.item_entry(int(i), score=float(v))
                for v, i in zip(top.values, top.indices, strict=True)
            ]
        }

    def similar(self, item: str, k: int) -> dict[str, Any]:
        """The ``k`` items nearest to ``item`` by cosine of the model's item vectors."""
        _check_range("k", k)
        with _unknown_id_is_404():
            i = self.ids.item_dense(item)
        with self.lock:
            vectors = self.model.item_vectors()
            if vectors is None:
                raise BadRequest(
                    f"{self.meta['model']} has no item representations to compare", 409
                )
            unit = torch.nn.functional.normalize(vectors.detach().float(), dim=1)
            cosine = unit @ unit[i]
        cosine[i] = -torch.inf
        top = torch.topk(cosine, min(k, self.dataset.n_items - 1))
        return {
            "item": self.ids.item_raw(i),
            "similar": [
                self.ids.item_entry(int(j), cosine=float(c))
                for c, j in zip(top.values, top.indices, strict=True)
            ],
        }

    def explain(self, item: str | None, user: str | None, top: int) -> dict[str, Any]:
        """What CADMR's attention looked at for one item or one user (409 for other models)."""
        model = self.model
        if not hasattr(model, "explain_item"):
            raise BadRequest(f"{self.meta['model']} has no attention to explain", 409)
        if (item is None) == (user is None):
            raise BadRequest("give exactly one of item= and user=", 422)
        _check_range("top", top)
        with _unknown_id_is_404(), self.lock:
            if item is not None:
                exp = model.explain_item(self.ids.item_dense(item), top=top)
            else:
                exp = model.explain_user(self.dense_user(user), top=top)
        return {
            "recommended": [{"item": self.ids.item_raw(i), "score": s} for i, s in exp.recommended],
            "attended": [{"item": self.ids.item_raw(i), "weight": w} for i, w in exp.attended],
            "uniform_weight": 1 / self.dataset.n_items,
            "modalities": exp.modalities,
        }


def _add_error_handlers(app: FastAPI) -> None:
    """Bad requests and invalid parameters or bodies answer ``{"error": "..."}``."""

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)


def _add_info_routes(app: FastAPI, meta: dict[str, Any]) -> None:
    """``GET /health`` and ``GET /model``."""

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def describe() -> dict[str, Any]:
        return meta


def _add_recommend_routes(app: FastAPI, service: _Service) -> None:
    """``GET /recommend``, ``POST /recommend`` and ``POST /recommend/new``."""

    @app.get("/recommend")
    def recommend_one(user: str, k: int = 10, exclude_valid: bool = False) -> dict[str, Any]:
        _check_range("k", k)
        return service.ranked([service.dense_user(user)], k, exclude_valid)[0]

    @app.post("/recommend")
    def recommend_many(body: BatchRequest) -> dict[str, Any]:
        users = [service.dense_user(u) for u in body.users]
        return {"results": service.ranked(users, body.k, body.exclude_valid)}

    @app.post("/recommend/new")
    def recommend_new(body: NewUserRequest) -> dict[str, Any]:
        return service.recommend_new(body.items, body.k)


def _add_item_routes(app: FastAPI, service: _Service) -> None:
    """``GET /similar`` and ``GET /explain``."""

    @app.get("/similar")
    def similar(item: str, k: int = 10) -> dict[str, Any]:
        return service.similar(item, k)

    @app.get("/explain")
    def explain(item: str | None = None, user: str | None = None, top: int = 10) -> dict:
        return service.explain(item, user, top)


def describe_checkpoint(path: Path, ck: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    """What ``GET /model`` reports: the checkpoint's model and data, and the metrics of its
    run when ``results.json`` sits beside it."""
    meta: dict[str, Any] = {
        "model": ck["config"]["model"],
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "users": dataset.n_users,
        "items": dataset.n_items,
        "params": ck.get("params"),
    }
    results = path.parent / "results.json"
    if results.is_file():
        try:
            run = json.loads(results.read_text())
            meta |= {"valid": run.get("valid"), "test": run.get("test"), "seed": run.get("seed")}
        except ValueError:
            pass
    return meta
