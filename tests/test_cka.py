"""kernels.cka: linear CKA against a plain numpy implementation of the feature-space formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import models
from kernels.cka import linear_cka, stage_cka, stage_outputs


def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    # Reference in feature space (p x q cross-covariance), not through Gram matrices.
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_linear_cka_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 4, 4))
    y = np.tanh(x.reshape(40, -1)[:, :20] @ rng.normal(size=(20, 7))) + 0.3 * rng.normal(size=(40, 7))
    got = linear_cka(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(_numpy_cka(x, y), rel=1e-10)
    assert 0.0 < got < 1.0


def test_linear_cka_invariances_and_its_axis():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(30, 12)))
    q, _ = torch.linalg.qr(torch.from_numpy(rng.normal(size=(12, 12))))
    assert linear_cka(x, x) == pytest.approx(1.0)
    # invariant to an orthogonal transform, an isotropic scale and a shift of the features
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)
    # centring is over examples: shuffling the examples of one side breaks the alignment
    assert linear_cka(x, x[torch.randperm(30, generator=torch.Generator().manual_seed(0))]) < 0.5
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:10])


def test_stage_cka_of_a_resnet_with_itself_is_one_and_differs_from_another():
    torch.manual_seed(0)
    a = models.create("resnet20", 10, 3, 16)
    b = models.create("resnet20", 10, 3, 16)
    images = torch.randn(24, 3, 16, 16)
    outputs = stage_outputs(a, images, batch_size=10)
    assert [tuple(o.shape) for o in outputs] == [(24, 16, 16, 16), (24, 32, 8, 8), (24, 64, 4, 4)]
    assert a.training                                  # the mode is restored
    same = stage_cka(a, a, images)
    assert list(same) == ["cka_stage1", "cka_stage2", "cka_stage3"]
    assert all(v == pytest.approx(1.0) for v in same.values())
    other = stage_cka(a, b, images)
    expected = [_numpy_cka(t.numpy(), s.numpy()) for t, s in zip(outputs, stage_outputs(b, images))]
    assert list(other.values()) == pytest.approx(expected, rel=1e-9)
    assert all(v < 0.999 for v in other.values())
    with pytest.raises(ValueError, match="ResNet"):
        stage_outputs(models.create("lenet5", 10, 1, 28), torch.zeros(2, 1, 28, 28))


def test_a_run_with_eval_cka_records_each_stage(tmp_path):
    # Through the real CLI: a ResNet-20 teacher and student on 12x12 digits, one epoch each.
    import json

    from cli_helpers import kdtui
    spec = tmp_path / "cka.toml"
    spec.write_text('name = "cka"\ndevice = "cpu"\n[data]\ndataset = "digits"\nimage_size = 12\n'
                    '[teacher]\nmodel = "resnet20"\nepochs = 1\naugment = []\n[student]\nepochs = 1\n'
                    '[distill]\naugment = []\n[eval]\ncka = true\n')
    result = kdtui("run", spec, "--workspace", tmp_path / "ws", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)["metrics"]
    values = [metrics[f"cka_stage{k}"] for k in (1, 2, 3)]
    assert all(0.0 < v <= 1.0 for v in values), values
    assert len(set(values)) == 3     # three stages, three different alignments
