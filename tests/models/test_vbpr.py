"""VBPR's score is the paper's eq. (2) without the terms BPR cancels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadmr.data import LeakageGuard
from cadmr.models.vbpr import VBPR, VBPRParams
from cadmr.testing import small_dataset


@pytest.fixture(scope="module")
def data():
    return small_dataset()  # 30 users x 20 items, modalities "a" (3-d) and "b" (2-d)


def test_score_is_biases_plus_id_and_content_terms(data):
    torch.manual_seed(0)
    params = VBPRParams(embedding_size=4, feature_norm="none")
    model = VBPR(params, data.n_users, data.n_items, data.modalities)
    model.setup(data.train, data.features, LeakageGuard(data))
    with torch.no_grad():
        model.item_bias.normal_()
        model.feature_bias.weight.normal_()
    f = np.concatenate([data.features["a"], data.features["b"]], axis=1)  # sorted names
    f = torch.from_numpy(f)
    users = np.array([0, 7])
    with torch.no_grad():
        expected = (
            model.item_bias
            + f @ model.feature_bias.weight[0]
            + model.user_emb[users] @ model.item_emb.T
            + model.user_content[users] @ (f @ model.projection.weight.T).T
        )
        torch.testing.assert_close(model.score(users), expected)


def test_needs_features():
    with pytest.raises(ValueError, match="at least one item modality"):
        VBPR(VBPRParams(), 3, 3, {})


def test_l2_feature_norm_gives_each_modality_unit_rows(data):
    model = VBPR(VBPRParams(embedding_size=4), data.n_users, data.n_items, data.modalities)
    model.setup(data.train, data.features, LeakageGuard(data))
    a, b = model.features[:, :3], model.features[:, 3:]  # modalities "a" (3-d), "b" (2-d)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(data.n_items))
    torch.testing.assert_close(b.norm(dim=1), torch.ones(data.n_items))
