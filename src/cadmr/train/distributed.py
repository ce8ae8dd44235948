"""Data-parallel training over processes with ``torch.distributed`` (launched by torchrun).

Every rank builds the same model from the same seed and draws the same batches from the
same generator; each then computes the loss on its contiguous share of every batch, and
``DistributedDataParallel`` averages the gradients before each optimizer step. A rank's
loss is scaled by ``share x world size`` (``share`` = its fraction of the batch), so the
averaged gradient is exactly the single-process gradient of the batch's mean loss, for every
model whose loss is a mean over the batch's examples, whatever the batch size.

What is replicated, not split: whole-graph propagation that a model runs inside ``loss``
(LightGCN and the other graph models propagate once per batch on every rank), validation,
and the closed-form models' fits. Every rank evaluates the same parameters, so early
stopping agrees without communication; rank 0 alone writes the run folder.

Exactness has two limits: in-batch contrastive losses (SLMRec's InfoNCE, BM3's) see only
the rank's share as negatives, and dropout draws differ from a single process's. Both are
still valid data-parallel training, not the single-process run to the last bit.

Backend: gloo where torch sees no GPU; where it sees one, gloo for CPU tensors and NCCL for
GPU tensors (``train.device=cuda`` puts each rank on its ``LOCAL_RANK`` GPU: NCCL needs one
GPU per rank). ``CADMR_DIST_BACKEND`` overrides the choice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def init_from_env() -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); True when this
    process is one rank of several. Idempotent."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    default = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(os.environ.get("CADMR_DIST_BACKEND") or default)
    return True


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """(this rank, number of ranks); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch: Any, rank: int, size: int) -> tuple[Any, float]:
    """Rank ``rank``'s contiguous share of a batch dataclass whose fields are (B, ...)
    arrays or tensors, and that share's fraction of the batch (0 when B < size leaves this
    rank nothing)."""
    if not dataclasses.is_dataclass(batch) or isinstance(batch, type):
        raise TypeError(
            f"data-parallel training splits batch dataclasses of (B, ...) arrays; got "
            f"{type(batch).__name__}"
        )
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    lengths = {len(v) for v in fields.values()}
    if len(lengths) != 1:
        raise TypeError(f"{type(batch).__name__}'s fields differ in length: {sorted(lengths)}")
    (n,) = lengths
    lo, hi = n * rank // size, n * (rank + 1) // size
    share = {k: v[lo:hi] for k, v in fields.items()}
    return dataclasses.replace(batch, **share), (hi - lo) / n if n else 0.0


class _Loss(nn.Module):
    """The model's ``loss`` as a module's forward, which is what DDP wraps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)  # type: ignore[operator]


def data_parallel_loss(model: nn.Module) -> Callable[[Any], torch.Tensor]:
    """``model.loss`` outside a process group; inside one, the loss of this rank's share,
    scaled so that DDP's gradient average equals the whole batch's gradient.

    Build it per training phase, after ``start_phase``: DDP registers the parameters that
    require gradients when it is constructed.
    """
    rank, size = rank_and_size()
    if size == 1:
        return model.loss  # type: ignore[return-value]
    # some models leave parameters out of some batches' losses (LATTICE's learned graph)
    ddp = DistributedDataParallel(_Loss(model), find_unused_parameters=True)

    def loss(batch: Any) -> torch.Tensor:
        part, share = shard(batch, rank, size)
        if share == 0.0:  # an empty share still joins the gradient all-reduce, with zeros
            return ddp(batch) * 0.0
        return ddp(part) * (share * size)

    return loss
