"""The two forms of the embedding penalty (ours and MMRec's EmbLoss) and where they apply."""

from __future__ import annotations

import pytest
import torch

from cadmr.data import LeakageGuard
from cadmr.models.bpr import BPRMF, BPRParams
from cadmr.models.layers import embedding_penalty
from cadmr.models.lightgcn import LightGCN, LightGCNParams
from cadmr.models.sampling import TripletBatch
from cadmr.models.vbpr import VBPRParams
from cadmr.testing import small_dataset


def test_known_answers():
    # a = [[3, 4], [0, 0]]: squared norm 25, Frobenius norm 5; b = [[1, 0], [0, 0]]: 1 and 1;
    # batch of 2 -> squared (25 + 1) / 2 = 13, MMRec's EmbLoss (5 + 1) / 2 = 3
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert embedding_penalty("squared", a, b).item() == pytest.approx(13.0)
    assert embedding_penalty("norm", a, b).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reg_form must be one of squared, norm"):
        embedding_penalty("l1", a)


@pytest.mark.parametrize("params_cls", [BPRParams, LightGCNParams, VBPRParams])
def test_params_refuse_an_unknown_form(params_cls):
    with pytest.raises(ValueError, match="reg_form"):
        params_cls(reg_form="l1")


@pytest.mark.parametrize(("cls", "params_cls"), [(BPRMF, BPRParams), (LightGCN, LightGCNParams)])
def test_the_loss_uses_the_chosen_form(cls, params_cls):
    data = small_dataset()
    batch = TripletBatch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    losses = {}
    for form in ("squared", "norm"):
        torch.manual_seed(0)
        model = cls(params_cls(reg_weight=1.0, reg_form=form), data.n_users, data.n_items, {})
        model.setup(data.train, {}, LeakageGuard(data))
        losses[form] = model.loss(batch).item()
        # the same model without the penalty: the difference is the penalty itself
        model.params = params_cls(reg_weight=0.0, reg_form=form)
        losses[form] -= model.loss(batch).item()
    u = model.user_emb[[0, 1]]
    p, n = model.item_emb[[0, 1]], model.item_emb[[2, 3]]
    assert losses["squared"] == pytest.approx(embedding_penalty("squared", u, p, n).item(), 1e-5)
    assert losses["norm"] == pytest.approx(embedding_penalty("norm", u, p, n).item(), 1e-5)
