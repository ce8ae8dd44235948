"""Shared math of the models: losses, graph operations and kernel layers (docs/conventions.md)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.graphs import sym_normalize
from cadmr.models.sampling import TripletBatch


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(pos - neg) (Rendle et al., 2009)."""
    return F.softplus(neg_scores - pos_scores).mean()


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for an integer tensor ``index`` of any shape, through ``index_select``:
    the same values and the same gradient bit for bit (both accumulate repeated rows in
    index order). On the CPU advanced indexing gathers element by element and its backward
    accumulates through ``index_put_``; gathering 2,048 rows of a (19,445, 64) table,
    forward and backward, takes 1.7 ms that way and 0.4 ms this way, and a BPR step does
    three such gathers (docs/scaling.md, "Exact fast paths")."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def triplet_rows(
    users: torch.Tensor, items: torch.Tensor, batch: TripletBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A BPR batch's rows: the user's, the positive item's and the negative item's, (B, d)
    each, from (n_users, d) and (n_items, d) tables."""
    return take_rows(users, batch.users), take_rows(items, batch.pos), take_rows(items, batch.neg)


def distinct_rows(*index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The distinct values of the index tensors, and for each tensor the position of each
    of its entries among them: ``f(x[distinct])[where]`` equals ``f(x[index])`` row by row
    for a row-wise ``f`` and costs one ``f`` per distinct row. A BPR batch of 2,048 triplets
    on lfm2k holds about 1,300 distinct items among its 4,096 positives and negatives, so
    projecting their features this way costs a third of projecting every triplet's."""
    distinct, where = torch.unique(torch.cat(index), return_inverse=True)
    return distinct, list(where.split([len(i) for i in index]))


def l2_per_example(*embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of squared L2 norms of the given (B, d) embeddings, divided by the batch size:
    the L2 penalty of the BPR and LightGCN papers, per example."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / batch


# forms of an embedding penalty (``embedding_penalty``)
REG_FORMS = ("squared", "norm")


def check_reg_form(form: str) -> None:
    """Raise ValueError unless ``form`` is one of ``REG_FORMS`` (params' own checks)."""
    if form not in REG_FORMS:
        raise ValueError(f"reg_form must be one of {', '.join(REG_FORMS)}, got {form!r}")


def embedding_penalty(form: str, *embeddings: torch.Tensor) -> torch.Tensor:
    """The penalty on a batch's (B, d) embeddings: "squared" is ``l2_per_example`` (our
    default); "norm" is MMRec's EmbLoss, the sum of each matrix's Frobenius norm, not
    squared, divided by the batch size (its published reg_weight grids are for this form)."""
    check_reg_form(form)
    if form == "squared":
        return l2_per_example(*embeddings)
    return sum(torch.linalg.vector_norm(e) for e in embeddings) / embeddings[0].shape[0]


def _bipartite(train: sp.csr_matrix) -> sp.csr_matrix:
    """The unnormalised (U + I, U + I) user-item graph A, users first, float32."""
    r = sp.csr_matrix(train, dtype=np.float32)
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def normalized_bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """Symmetrically normalised user-item graph D^-1/2 A D^-1/2 of shape (U + I, U + I),
    users first, no self loops (LightGCN, eq. 7). Isolated nodes get zero rows."""
    return sym_normalize(_bipartite(train))


def random_walk_bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """Row-normalised user-item graph with self loops, D^-1 (A + I), (U + I, U + I), users
    first: each layer averages a node with its neighbours (NGCF's form, MMRec's LATTICE)."""
    a = _bipartite(train)
    a = a + sp.eye(a.shape[0], dtype=np.float32, format="csr")
    out = sp.csr_matrix(sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a, dtype=np.float32)
    out.sort_indices()
    return out


def checked_bipartite_adjacency(
    train: sp.csr_matrix, guard: LeakageGuard, owner: str, form: str = "sym"
) -> torch.Tensor:
    """The user-item graph every LightGCN-style model propagates over, passed through the
    leakage guard (named "<owner> adjacency" in its error), as a torch sparse tensor:
    ``normalized_bipartite_adjacency(train)`` ("sym") or
    ``random_walk_bipartite_adjacency(train)`` ("rw_self")."""
    builders = {"sym": normalized_bipartite_adjacency, "rw_self": random_walk_bipartite_adjacency}
    if form not in builders:
        raise ValueError(f"graph form must be one of {', '.join(builders)}, got {form!r}")
    adj = builders[form](train)
    return to_torch_sparse(guard.check(adj, f"{owner} adjacency", layout="bipartite"))


def to_torch_sparse(m: sp.spmatrix, device: torch.device | str | None = None) -> torch.Tensor:
    """scipy sparse -> torch sparse CSR float32 tensor (fast CPU sparse x dense products), on
    ``device`` (the CPU when None)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on mm only
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
            check_invariants=False,
        )
        return t if device is None else t.to(device)


class _LearnedGraphMM(torch.autograd.Function):
    """``A @ x`` for a COO matrix ``A`` whose values carry gradient (a learned graph).

    torch's own backward for the values forms the dense ``grad @ x^T`` before masking it to
    ``A``'s pattern: an (n, n) matrix, 15.9 GB for LATTICE at Electronics size. The gradient
    of value e at (r, c) is ``grad[r] . x[c]``; here it is gathered in chunks of
    ``GRAPH_GRAD_CHUNK`` entries, so memory stays O(nnz)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, indices: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int
    ) -> torch.Tensor:
        ctx.save_for_backward(indices, values, x)
        a = torch.sparse_coo_tensor(indices, values, (n_rows, x.shape[0]), check_invariants=False)
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[None, torch.Tensor | None, torch.Tensor | None, None]:
        indices, values, x = ctx.saved_tensors
        d_values = d_x = None
        if ctx.needs_input_grad[1]:
            d_values = torch.empty_like(values)
            for i in range(0, values.shape[0], GRAPH_GRAD_CHUNK):
                r, c = indices[0, i : i + GRAPH_GRAD_CHUNK], indices[1, i : i + GRAPH_GRAD_CHUNK]
                d_values[i : i + GRAPH_GRAD_CHUNK] = torch.linalg.vecdot(
                    take_rows(grad, r), take_rows(x, c)
                )
        if ctx.needs_input_grad[2]:
            a_t = torch.sparse_coo_tensor(
                indices.flip(0), values, (x.shape[0], grad.shape[0]), check_invariants=False
            )
            d_x = torch.sparse.mm(a_t, grad)
        return None, d_values, d_x, None


# entries of a learned graph whose value gradients one chunk gathers (see _LearnedGraphMM)
GRAPH_GRAD_CHUNK = 1 << 18


def learned_graph_mm(graph: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``graph @ x`` for a coalesced sparse COO ``graph``, its values differentiable, in
    O(nnz) memory (``_LearnedGraphMM``); a constant graph takes torch's product."""
    if not graph.requires_grad:
        return torch.sparse.mm(graph, x)
    return _LearnedGraphMM.apply(graph.indices(), graph.values(), x, graph.shape[0])


class _ConstantSpMM(torch.autograd.Function):
    """``a @ x`` for a constant torch CSR ``a`` (data, not a parameter), gradient to ``x``.

    torch's own backward forms ``a^T`` at every call (a sort and an index conversion over all
    non-zeros): 40 ms for a (64, 19,445) batch of item rows against a 500-wide gradient.
    Here ``a^T @ grad`` is ``a @ grad`` for a symmetric ``a`` (the normalised graphs of the
    LightGCN family), else scipy's transposed product on ``a``'s own arrays (4 ms) on the
    CPU, and torch's product with the transposed COO form on another device.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, x: torch.Tensor, symmetric: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.a, ctx.symmetric = a, symmetric
        return csr_mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        a = ctx.a
        if ctx.symmetric:
            return None, csr_mm(a, grad), None
        if a.device.type == "cpu":
            return None, _transposed_mm_scipy(a, grad), None
        return None, _transposed_mm_torch(a, grad), None  # no scipy on another device


def _transposed_mm_scipy(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a^T @ x`` for a CPU CSR ``a``: scipy's product on ``a``'s own arrays, no transpose."""
    a_sp = sp.csr_matrix(
        (a.values().numpy(), a.col_indices().numpy(), a.crow_indices().numpy()),
        shape=tuple(a.shape),
    )
    return torch.from_numpy(np.asarray(a_sp.T @ x.contiguous().numpy())).to(x.dtype)


def _transposed_mm_torch(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a^T @ x`` for a CSR ``a`` on any device, through its transposed COO form."""
    return torch.sparse.mm(a.to_sparse_coo().t(), x)


def csr_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a CSR ``a`` and a dense ``x``, neither differentiated here (use
    ``sparse_mm`` otherwise). On the CPU the product is written by ``addmm`` into a fresh
    output that is also its input, scaled by beta = 0: the same values as
    ``torch.sparse.mm`` bit for bit, without its zero-filled input copied into the output
    first (LightGCN's Baby-size graph, 26,495 nodes x 64 columns: 4.4 -> 2.7 ms)."""
    if a.layout != torch.sparse_csr or a.device.type != "cpu" or x.dim() != 2 or x.dtype != a.dtype:
        return torch.sparse.mm(a, x)
    out = x.new_empty(a.shape[0], x.shape[1])
    return torch.addmm(out, a, x, beta=0, out=out)


def sparse_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a sparse ``a`` (CSR or COO) and dense ``x``; a constant CSR ``a`` (data,
    not a parameter) takes the fast backward of ``_ConstantSpMM``."""
    if a.layout == torch.sparse_csr and not a.requires_grad:
        if not (x.requires_grad and torch.is_grad_enabled()):
            return csr_mm(a, x)
        return _ConstantSpMM.apply(a, x, False)
    return torch.sparse.mm(a, x)


def csr_rows(a: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (int64) of a CSR ``a`` as a (len(rows), n_cols) CSR, each row's entries
    in ``a``'s order, so products with it give ``a``'s rows bit for bit (torch has no
    ``index_select`` for CSR tensors)."""
    crow, col = a.crow_indices(), a.col_indices()
    starts = crow[rows]
    lengths = crow[rows + 1] - starts
    new_crow = lengths.new_zeros(len(rows) + 1)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    total = int(new_crow[-1])
    shift = torch.repeat_interleave(starts - new_crow[:-1], lengths, output_size=total)
    at = torch.arange(total, dtype=crow.dtype, device=crow.device) + shift
    return torch.sparse_csr_tensor(
        new_crow, col[at], a.values()[at], (len(rows), a.shape[1]), check_invariants=False
    )


def symmetric_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` with gradient to ``x`` only; ``adj`` must be symmetric (not checked: the
    callers pass ``checked_bipartite_adjacency``'s D^-1/2 A D^-1/2)."""
    return _ConstantSpMM.apply(adj, x, True)


def propagate_mean(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN propagation: mean of E, AE, A^2E, ..., A^L E. (N, d) -> (N, d); ``adj``
    symmetric (``symmetric_spmm``)."""
    out = ego
    layer = ego
    for _ in range(n_layers):
        layer = symmetric_spmm(adj, layer)
        out = out + layer
    return out / (n_layers + 1)


def propagate_mean_rows(
    adj: torch.Tensor, ego: torch.Tensor, n_layers: int, rows: torch.Tensor
) -> torch.Tensor:
    """``take_rows(propagate_mean(adj, ego, n_layers), rows)`` bit for bit, values and
    gradients, for distinct ``rows`` (int64): a training batch needs the mean only at its
    own nodes, so the last layer is propagated there alone, through ``adj``'s rows
    ``rows`` (on the CPU its backward is scipy's transposed product on them). A BPR batch of
    2,048 on Baby touches 18 % of the graph's nodes and 38 % of its non-zeros; on lfm2k,
    ml100k or Scientific two thirds or more of the nodes, where the row extraction costs
    more than it saves, so batches covering over half the nodes take the full product."""
    if n_layers == 0 or 2 * len(rows) > adj.shape[0]:
        return take_rows(propagate_mean(adj, ego, n_layers), rows)
    out = take_rows(ego, rows)
    layer = ego
    for _ in range(n_layers - 1):
        layer = symmetric_spmm(adj, layer)
        out = out + take_rows(layer, rows)
    out = out + sparse_mm(csr_rows(adj, rows), layer)
    return out / (n_layers + 1)


def local_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """GLocal-K's local kernel k_ij = max(0, 1 - ||u_i - v_j||^2).

    Args:
        u: (n_in, d) input-unit embeddings.
        v: (n_out, d) output-unit embeddings.

    Returns:
        (n_in, n_out) kernel values in [0, 1].
    """
    # the upper clamp only removes rounding above 1 where the distance is ~0
    u_aug, v_aug_t = _kernel_factors(u, v)
    return (u_aug @ v_aug_t).clamp_(0.0, 1.0)


def _kernel_factors(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_in, d + 2) and (d + 2, n_out) factors whose product is the kernel before clamping,
    ``1 - |u_i|^2 - |v_j|^2 + 2 u_i.v_j`` (differentiable at distance 0, unlike cdist).

    One plain matrix product: ``addmm`` with the broadcast ``1 - |u|^2 - |v|^2`` as its base
    ran 10x slower per element on a (524, 500) block, and the right factor is stored
    transposed because a product with a skinny row-major (n_out, d) operand is 4x slower.
    """
    u_aug = torch.cat([u, u.pow(2).sum(1, keepdim=True), torch.ones_like(u[:, :1])], dim=1)
    v_aug = torch.cat([2.0 * v, -torch.ones_like(v[:, :1]), 1.0 - v.pow(2).sum(1, keepdim=True)], 1)
    return u_aug, v_aug.T.contiguous()


# entries of one tile of the fused kernel pass: 1 MiB of float32, so a tile's chain of
# elementwise ops runs in cache instead of streaming the whole matrix
KERNEL_BLOCK_ELEMENTS = 1 << 18
# columns of one tile at most: the tile's slices of the (d + 2, n_out) kernel factor and of
# the backward's (d + 1, n_out) accumulator (under 1 MB each) stay in cache while its rows
# go by. Whole rows made an Electronics-size decoder (500 x 192,403) walk 1-row blocks that
# re-read 5 MB of factor and accumulator per row; narrower tiles than this slowed the
# Baby-size step (docs/scaling.md)
KERNEL_BLOCK_COLUMNS = 1 << 15
# KernelWeight walks CPU weights with kernel_pass's compiled loops (about twice as fast as
# the tiles of torch ops); tests turn it off to check the torch walk that other devices use
COMPILED_CPU_PASS = True


def _kernel_pass() -> Any:
    """``kernel_pass``, imported on first use: numba adds about 0.25 s to the start-up of
    every model, and only the local-kernel autoencoders run its loops."""
    from cadmr.models import kernel_pass

    return kernel_pass


def _compiled(weight: torch.Tensor) -> bool:
    return COMPILED_CPU_PASS and _kernel_pass().supports(weight)


class KernelWeight(torch.autograd.Function):
    """``(W * k, sum W^2, sum k^2)`` with ``k = local_kernel(u, v)``, fused.

    Composed from torch ops, a step streams the (n_in, n_out) matrices through memory some
    thirty times (kernel, clamp, product, squares, and each op's backward); on a real
    catalogue these elementwise passes, not the matrix products, dominated the step. Here
    forward and backward each walk the matrix once, recomputing the kernel in backward
    instead of storing it. On the CPU (float32 and float64) the walk is the compiled loops
    of ``kernel_pass`` while ``COMPILED_CPU_PASS`` is true; elsewhere it is torch ops over
    tiles of about ``KERNEL_BLOCK_ELEMENTS`` entries and at most ``KERNEL_BLOCK_COLUMNS``
    columns (column blocks outside, row blocks inside). Gradients are the composed ops'
    except exactly on the clamp's bounds (``pre`` = 0 or 1), where this passes none and
    ``torch.clamp`` passes all (``hardtanh_backward``'s mask). Tests compare both walks
    with the composed ops and run gradcheck; docs/scaling.md has the timings.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(weight, u, v)
        if _compiled(weight):
            return _kernel_pass().forward(weight, u, v)
        out = torch.empty_like(weight)
        sq_w, sq_k = weight.new_zeros(()), weight.new_zeros(())
        for rows, cols, k, _ in _kernel_tiles(u, v):
            w = weight[rows, cols]
            torch.mul(w, k, out=out[rows, cols])
            sq_w += _sum_of_squares(w)
            sq_k += _sum_of_squares(k)
        return out, sq_w, sq_k

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        g_out: torch.Tensor | None,
        g_sq_w: torch.Tensor | None,
        g_sq_k: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weight, u, v = ctx.saved_tensors
        two_gw = 2.0 * float(g_sq_w) if g_sq_w is not None else 0.0
        two_gk = 2.0 * float(g_sq_k) if g_sq_k is not None else 0.0
        if _compiled(weight):
            g = g_out if g_out is not None else torch.zeros_like(weight)
            return _kernel_pass().backward(weight, u, v, g, two_gw, two_gk)
        d = u.shape[1]
        d_weight = torch.empty_like(weight)
        # with a column of ones, one product gives a @ v and a's row sums (for d_u), and
        # another v_acc = sum_i a_ij u_i and a's column sums (for d_v); the operands are laid
        # out as (d + 1, n) rows, the fast orientation (see _kernel_factors)
        v1_t = torch.cat([v.detach(), torch.ones_like(v[:, :1])], dim=1).T.contiguous()
        u1_t = torch.cat([u.detach(), torch.ones_like(u[:, :1])], dim=1).T.contiguous()
        row_acc = u.new_zeros(u.shape[0], d + 1)  # columns: a @ v, then the row sums
        col_acc = v.new_zeros(d + 1, v.shape[0])  # rows: v_acc^T, then the column sums
        for rows, cols, k, pre in _kernel_tiles(u, v):
            w = weight[rows, cols]
            g = g_out[rows, cols] if g_out is not None else torch.zeros_like(w)
            torch.mul(w, two_gw, out=d_weight[rows, cols]).addcmul_(g, k)
            # a = dL/dpre, where pre = 1 - |u_i|^2 - |v_j|^2 + 2 u_i.v_j
            a = torch.ops.aten.hardtanh_backward(torch.mul(k, two_gk).addcmul_(g, w), pre, 0, 1)
            row_acc[rows].addmm_(a, v1_t[:, cols].T)
            col_acc[:, cols].addmm_(u1_t[:, rows], a)
        d_u = 2.0 * (row_acc[:, :d] - u * row_acc[:, d:])
        d_v = 2.0 * (col_acc[:d].T - v * col_acc[d, :, None])
        return d_weight, d_u, d_v


def _sum_of_squares(t: torch.Tensor) -> torch.Tensor:
    """Sum of the squared entries of a 2-d tile, without copying a strided one."""
    if t.is_contiguous():
        flat = t.reshape(-1)
        return torch.linalg.vecdot(flat, flat)
    return torch.linalg.vecdot(t, t).sum()


def _kernel_tiles(
    u: torch.Tensor, v: torch.Tensor
) -> Iterator[tuple[slice, slice, torch.Tensor, torch.Tensor]]:
    """(row slice, column slice, kernel tile, pre-clamp tile) of ``local_kernel(u, v)``:
    column blocks of at most ``KERNEL_BLOCK_COLUMNS`` outside, row blocks inside, each tile
    about ``KERNEL_BLOCK_ELEMENTS`` entries."""
    u_aug, v_aug_t = _kernel_factors(u.detach(), v.detach())
    n_in, n_out = u.shape[0], v.shape[0]
    width = max(1, min(n_out, KERNEL_BLOCK_COLUMNS, KERNEL_BLOCK_ELEMENTS))
    height = max(1, KERNEL_BLOCK_ELEMENTS // width)
    for c in range(0, n_out, width):
        cols = slice(c, min(c + width, n_out))
        v_block = v_aug_t[:, cols].contiguous()
        for i in range(0, n_in, height):
            rows = slice(i, min(i + height, n_in))
            pre = u_aug[rows] @ v_block
            yield rows, cols, pre.clamp(0.0, 1.0), pre


class LocalKernelLayer(nn.Module):
    """A dense layer whose weight is sparsified by a learned local kernel (GLocal-K).

    The effective weight is ``W * k`` with ``k = local_kernel(u, v)``: connections between
    input and output units whose embeddings lie further apart than 1 are exactly zero.
    Initialisation: Xavier-uniform ``W``, zero bias, ``u`` and ``v`` ~ N(0, 1e-3^2), so that
    every connection starts with a kernel close to 1 (as in GLocal-K).

    Args:
        n_in: Number of input units.
        n_out: Number of output units.
        kernel_dim: Dimension of the unit embeddings ``u`` and ``v``.
    """

    def __init__(self, n_in: int, n_out: int, kernel_dim: int = 5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.u = nn.Parameter(torch.empty(n_in, kernel_dim))
        self.v = nn.Parameter(torch.empty(n_out, kernel_dim))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.weight)
        nn.init.normal_(self.u, std=1e-3)
        nn.init.normal_(self.v, std=1e-3)
        self._shared: tuple[torch.Tensor, ...] | object | None = None  # see shared_kernels

    def kernel(self) -> torch.Tensor:
        """(n_in, n_out) kernel k (for inspection; training uses ``weighted``)."""
        return local_kernel(self.u, self.v)

    def weighted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W * k, sum W^2, sum k^2) from one fused pass (``KernelWeight``), computed once
        per ``shared_kernels`` block."""
        if self._shared is None:
            return KernelWeight.apply(self.weight, self.u, self.v)
        if self._shared is _EMPTY:
            self._shared = KernelWeight.apply(self.weight, self.u, self.v)
        return self._shared  # type: ignore[return-value]

    def effective_weight(self) -> torch.Tensor:
        """(n_in, n_out) weight W * k actually applied."""
        return self.weighted()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ (W * k) + b``: (B, n_in) dense or torch sparse (CSR/COO) -> (B, n_out)."""
        w = self.effective_weight()
        out = sparse_mm(x, w) if x.layout != torch.strided else x @ w
        return out + self.bias

    def forward_columns(self, x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Only the output units ``cols``: (B, n_in) dense, (C,) int64 -> (B, C), without
        forming the kernel or weight of the other outputs."""
        w = self.weight[:, cols] * local_kernel(self.u, self.v[cols])  # (n_in, C)
        return x @ w + self.bias[cols]

    def penalties(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of W^2, sum of k^2): the terms GLocal-K weighs by lambda_2 and lambda_s."""
        _, sq_w, sq_k = self.weighted()
        return sq_w, sq_k


_EMPTY = object()


@contextlib.contextmanager
def shared_kernels(layers: Iterable[LocalKernelLayer]) -> Iterator[None]:
    """Within the block, each layer computes its kernel once and reuses it (forward and
    penalty of one training step share it, and so does autograd); the kernel is the largest
    and slowest intermediate of a step on a real catalogue (I x hidden entries). Blocks nest:
    an inner block leaves the layers an outer one shares to the outer one."""
    fresh = [layer for layer in layers if layer._shared is None]
    for layer in fresh:
        layer._shared = _EMPTY
    try:
        yield
    finally:
        for layer in fresh:
            layer._shared = None


def feature_tensor(features: np.ndarray, norm: str = "l2") -> torch.Tensor:
    """A float32 tensor copy of one modality's (I, d) features, its rows scaled to unit L2
    norm when ``norm`` is "l2" (zero rows stay zero), as they are when "none". The models'
    ``feature_norm`` option: modalities come at very different scales (lfm2k's VGGish audio
    rows have norm ~1,500, its MiniLM text rows 1)."""
    x = np.array(features, dtype=np.float32)  # a copy: the dataset's arrays are read-only
    if norm == "l2":
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif norm != "none":
        raise ValueError(f"feature norm must be 'l2' or 'none', got {norm!r}")
    return torch.from_numpy(x)


def modality_features(
    features: Mapping[str, np.ndarray], modalities: Iterable[str], norm: str = "l2"
) -> dict[str, torch.Tensor]:
    """``feature_tensor`` of each of ``modalities`` (I, d_m), by name, in their order."""
    return {m: feature_tensor(features[m], norm) for m in modalities}


def item_content(
    features: Mapping[str, np.ndarray | torch.Tensor],
    modalities: Iterable[str],
    center: bool = True,
) -> torch.Tensor:
    """Each item's modalities, each centred on the catalogue mean (``center``: text
    encoders' vectors share a large common direction) and scaled to unit length, then
    concatenated and scaled to unit length again, so every modality weighs the same in a
    cosine: (I, sum d_m) float32. Content k-NN's item vectors and CADMR's neighbour graph."""
    blocks = []
    for m in modalities:
        f = features[m]
        if isinstance(f, torch.Tensor):
            x = f.float()
        else:  # a copy: the dataset's arrays are read-only
            x = torch.from_numpy(np.array(f, dtype=np.float32))
        if center:
            x = x - x.mean(dim=0, keepdim=True)
        blocks.append(F.normalize(x, dim=1))
    return F.normalize(torch.cat(blocks, dim=1), dim=1)


def id_embeddings(n_users: int, n_items: int, dim: int) -> tuple[nn.Parameter, nn.Parameter]:
    """User (n_users, dim) and item (n_items, dim) ID embeddings, Xavier-uniform, the users
    drawn first from torch's generator (assign them in this order to keep the models'
    parameter order)."""
    users = nn.Parameter(torch.empty(n_users, dim))
    items = nn.Parameter(torch.empty(n_items, dim))
    nn.init.xavier_uniform_(users)
    nn.init.xavier_uniform_(items)
    return users, items


def modality_projections(
    feature_dims: Mapping[str, int],
    modalities: Iterable[str],
    dim: int,
    bias: bool = True,
    init: Callable[[torch.Tensor], Any] | None = None,
) -> nn.ModuleDict:
    """One ``nn.Linear(d_m, dim)`` per modality, built in the order of ``modalities``, then
    (when ``init`` is given) each weight re-initialised by ``init`` in the same order."""
    layers = nn.ModuleDict({m: nn.Linear(feature_dims[m], dim, bias=bias) for m in modalities})
    if init is not None:
        for layer in layers.values():
            init(layer.weight)
    return layers
