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
    ids = IdMaps.for_dataset(dataset)
    lock = threading.Lock()
    model.prepare_scoring()  # once: the model never changes while it is served

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    def dense_user(token: str | int) -> int:
        try:
            return ids.user_dense(str(token))
        except KeyError as e:
            raise BadRequest(e.args[0], 404) from None

    def ranked(users: list[int], k: int, exclude_valid: bool) -> list[dict[str, Any]]:
        with lock:
            items, scores = model.recommend(
                np.asarray(users),
                k,
                exclude=dataset.valid if exclude_valid else None,
                prepare=False,
            )
        out = []
        for u, its, scs in zip(users, items, scores, strict=True):
            recs = [
                ids.item_entry(int(i), score=float(s))
                for i, s in zip(its, scs, strict=True)
                if i >= 0
            ]
            out.append({"user": ids.user_raw(u), "items": recs})
        return out

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def describe() -> dict[str, Any]:
        return meta

    @app.get("/recommend")
    def recommend_one(user: str, k: int = 10, exclude_valid: bool = False) -> dict[str, Any]:
        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be in 1..{MAX_K}, got {k}", 422)
        return ranked([dense_user(user)], k, exclude_valid)[0]

    @app.post("/recommend")
    def recommend_many(body: BatchRequest) -> dict[str, Any]:
        users = [dense_user(u) for u in body.users]
        return {"results": ranked(users, body.k, body.exclude_valid)}

    @app.post("/recommend/new")
    def recommend_new(body: NewUserRequest) -> dict[str, Any]:
        try:
            items = np.array([ids.item_dense(str(t)) for t in body.items], dtype=np.int64)
        except KeyError as e:
            raise BadRequest(e.args[0], 404) from None
        with lock:
            scores = model.fold_in(items)
        if scores is None:
            raise BadRequest(
                f"{meta['model']} cannot score a user it was not trained on (per-user "
                "parameters); EASE and popularity can",
                409,
            )
        scores = scores.detach().cpu().clone()
        scores[torch.as_tensor(items)] = -torch.inf  # what they already have
        top = torch.topk(scores, min(body.k, len(scores) - len(set(items.tolist()))))
        return {
            "items": [
                ids.item_entry(int(i), score=float(v))
                for v, i in zip(top.values, top.indices, strict=True)
            ]
        }

    @app.get("/similar")
    def similar(item: str, k: int = 10) -> dict[str, Any]:
        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be in 1..{MAX_K}, got {k}", 422)
        try:
            i = ids.item_dense(item)
        except KeyError as e:
            raise BadRequest(e.args[0], 404) from None
        with lock:
            vectors = model.item_vectors()
            if vectors is None:
                raise BadRequest(f"{meta['model']} has no item representations to compare", 409)
            unit = torch.nn.functional.normalize(vectors.detach().float(), dim=1)
            cosine = unit @ unit[i]
        cosine[i] = -torch.inf
        top = torch.topk(cosine, min(k, dataset.n_items - 1))
        return {
            "item": ids.item_raw(i),
            "similar": [
                ids.item_entry(int(j), cosine=float(c))
                for c, j in zip(top.values, top.indices, strict=True)
            ],
        }

    @app.get("/explain")
    def explain(item: str | None = None, user: str | None = None, top: int = 10) -> dict:
        if not hasattr(model, "explain_item"):
            raise BadRequest(f"{meta['model']} has no attention to explain", 409)
        if (item is None) == (user is None):
            raise BadRequest("give exactly one of item= and user=", 422)
        if not 1 <= top <= MAX_K:
            raise BadRequest(f"top must be in 1..{MAX_K}, got {top}", 422)
        try:
            with lock:
                if item is not None:
                    exp = model.explain_item(ids.item_dense(item), top=top)
                else:
                    exp = model.explain_user(dense_user(user), top=top)
        except KeyError as e:
            raise BadRequest(e.args[0], 404) from None
        return {
            "recommended": [{"item": ids.item_raw(i), "score": s} for i, s in exp.recommended],
            "attended": [{"item": ids.item_raw(i), "weight": w} for i, w in exp.attended],
            "uniform_weight": 1 / dataset.n_items,
            "modalities": exp.modalities,
        }

    return app


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
