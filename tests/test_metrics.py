"""Metrics, ensembles and losses against independent numpy references on random logits."""
import numpy as np
import pytest
import torch

from kernels import metrics
from kernels.ensemble import Ensemble, ensemble_log_probs
from kernels.losses import distillation_loss, label_loss, total_loss
from kernels.augment import Mix


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ref_agreement(s, t):
    return np.mean(np.argmax(s, 1) == np.argmax(t, 1))


def ref_kl(t, s):
    lt, ls = np_log_softmax(t), np_log_softmax(s)
    return np.mean(np.sum(np.exp(lt) * (lt - ls), axis=1))


def ref_nll(z, y):
    return -np.mean(np_log_softmax(z)[np.arange(len(y)), y])


def ref_ece(z, y, n_bins=10):
    p = np.exp(np_log_softmax(z))
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    return total


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    n, c = 1037, 7  # odd sizes, so the last accumulator batch is uneven
    # Correlated student/teacher, so agreement is neither ~1/C nor 1.
    t = rng.normal(size=(n, c)) * 2
    s = t + rng.normal(size=(n, c)) * 1.5
    y = np.where(rng.random(n) < 0.7, t.argmax(1), rng.integers(0, c, n))
    return s, t, y


def test_each_metric_matches_numpy(logits):
    s, t, y = logits
    S, T, Y = torch.tensor(s), torch.tensor(t), torch.tensor(y)
    assert metrics.agreement(S, T) == pytest.approx(ref_agreement(s, t), abs=1e-12)
    assert metrics.predictive_kl(T, S) == pytest.approx(ref_kl(t, s), rel=1e-5)
    assert metrics.accuracy(S, Y) == pytest.approx(np.mean(s.argmax(1) == y), abs=1e-12)
    assert metrics.nll(S, Y) == pytest.approx(ref_nll(s, y), rel=1e-5)
    assert metrics.expected_calibration_error(S, Y) == pytest.approx(ref_ece(s, y), abs=1e-6)
    assert 0 < metrics.agreement(S, T) < 1 and metrics.predictive_kl(T, S) > 0


def test_kl_is_forward_direction(logits):
    s, t, _ = logits
    S, T = torch.tensor(s), torch.tensor(t)
    assert metrics.predictive_kl(T, S) != pytest.approx(metrics.predictive_kl(S, T), rel=1e-3)
    assert metrics.predictive_kl(T, S) == pytest.approx(ref_kl(t, s), rel=1e-5)


@pytest.mark.parametrize("batch", [1, 100, 333, 1037])
def test_accumulator_in_uneven_batches_equals_whole_set(logits, batch):
    s, t, y = logits
    S, T, Y = torch.tensor(s).float(), torch.tensor(t).float(), torch.tensor(y)
    acc = metrics.FidelityAccumulator("cpu")
    for i in range(0, len(s), batch):
        acc.add(S[i:i + batch], T[i:i + batch], Y[i:i + batch])
    r = acc.result()
    assert r["agreement"] == pytest.approx(ref_agreement(s, t), abs=1e-12)
    assert r["kl"] == pytest.approx(ref_kl(t, s), rel=1e-4)
    assert r["acc"] == pytest.approx(np.mean(s.argmax(1) == y), abs=1e-12)
    assert r["nll"] == pytest.approx(ref_nll(s, y), rel=1e-4)
    assert r["ece"] == pytest.approx(ref_ece(s, y), abs=1e-5)
    assert r["teacher_acc"] == pytest.approx(np.mean(t.argmax(1) == y), abs=1e-12)


def test_accumulator_counts_only_labelled_rows(logits):
    s, t, y = logits
    y_masked = y.copy()
    y_masked[::3] = -1  # unlabelled extra data
    keep = y_masked >= 0
    acc = metrics.FidelityAccumulator("cpu")
    acc.add(torch.tensor(s), torch.tensor(t), torch.tensor(y_masked))
    r = acc.result()
    assert r["agreement"] == pytest.approx(ref_agreement(s, t), abs=1e-12)  # agreement uses every row
    assert r["acc"] == pytest.approx(np.mean(s[keep].argmax(1) == y[keep]), abs=1e-12)
    assert r["nll"] == pytest.approx(ref_nll(s[keep], y[keep]), rel=1e-5)
    assert r["ece"] == pytest.approx(ref_ece(s[keep], y[keep]), abs=1e-6)


def test_metrics_accept_log_probabilities(logits):
    s, t, y = logits
    lp = torch.log_softmax(torch.tensor(s), -1)
    assert metrics.nll(lp, torch.tensor(y)) == pytest.approx(ref_nll(s, y), rel=1e-6)
    assert metrics.predictive_kl(torch.tensor(t), lp) == pytest.approx(ref_kl(t, s), rel=1e-5)


def test_agreement_consistency_bounds(logits):
    s, t, y = logits
    S, T, Y = map(torch.tensor, (s, t, y))
    a_s, a_t, agree = metrics.accuracy(S, Y), metrics.accuracy(T, Y), metrics.agreement(S, T)
    assert a_s + a_t - 1 <= agree <= 1 - abs(a_s - a_t)


def test_ensemble_is_log_mean_probability_not_mean_logit():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 50, 5)) * 3
    ref = np.log(np.mean(np.exp(np_log_softmax(z)), axis=0))
    out = ensemble_log_probs(torch.tensor(z)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    mean_logit = np_log_softmax(z.mean(0))
    assert not np.allclose(out, mean_logit, atol=1e-3)
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("members", [2, 5, 7])
def test_a_rows_ensemble_output_has_the_same_bits_in_any_batch(members):
    """A teacher cache derives the ensemble's rows in large chunks; the online teacher, in the step's
    batch. They must agree bit for bit, whatever the batch's size (torch.logsumexp over dim 0 does not:
    5 members at batch 14 flipped the last bit of hundreds of rows)."""
    torch.manual_seed(members)
    logits = torch.randn(members, 3000, 10) * 5
    whole = torch.cat([ensemble_log_probs(logits[:, i:i + 1024]) for i in range(0, 3000, 1024)])
    for size in (1, 14, 32, 80):
        for rows in torch.randperm(3000).split(size):
            assert torch.equal(ensemble_log_probs(logits[:, rows]), whole[rows]), size
    reference = np.log(np.mean(np.exp(np_log_softmax(logits.double().numpy())), axis=0))
    np.testing.assert_allclose(whole.numpy(), reference, rtol=1e-5, atol=1e-5)


def test_a_class_no_member_allows_stays_impossible():
    logits = torch.tensor([[[-float("inf"), 0.0, 1.0]], [[-float("inf"), 2.0, 0.0]]])
    out = ensemble_log_probs(logits)
    assert out[0, 0] == -float("inf") and torch.isfinite(out[0, 1:]).all()
    np.testing.assert_allclose(out.exp().sum().item(), 1.0, rtol=1e-6)


def test_ensemble_module_matches_function():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(10, 4)
    expected = ensemble_log_probs(torch.stack([m(x) for m in members]))
    torch.testing.assert_close(Ensemble(members)(x), expected)
    single = Ensemble(members[:1])(x)
    torch.testing.assert_close(single, torch.log_softmax(members[0](x), -1))


@pytest.mark.parametrize("tau", [1.0, 4.0, 8.0])
def test_kd_gradient_equals_tau_squared_kl_gradient(tau):
    rng = np.random.default_rng(2)
    s = rng.normal(size=(16, 10)) * 2
    t = rng.normal(size=(16, 10)) * 2
    S = torch.tensor(s, requires_grad=True)
    distillation_loss(S, torch.tensor(t), "kl", tau).backward()
    # Independent reference: d/dz_s of τ²·mean KL(p_t^τ ‖ p_s^τ) = τ·(p_s^τ − p_t^τ)/n.
    p_s = np.exp(np_log_softmax(s / tau))
    p_t = np.exp(np_log_softmax(t / tau))
    np.testing.assert_allclose(S.grad.numpy(), tau * (p_s - p_t) / len(s), rtol=1e-5, atol=1e-9)


def test_loss_values_against_numpy():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    S, T = torch.tensor(s), torch.tensor(t)
    tau = 2.0
    ls, lt = np_log_softmax(s / tau), np_log_softmax(t / tau)
    kl_ts = np.mean(np.sum(np.exp(lt) * (lt - ls), 1))
    kl_st = np.mean(np.sum(np.exp(ls) * (ls - lt), 1))
    assert distillation_loss(S, T, "kl", tau).item() == pytest.approx(-tau**2 * np.mean(np.sum(np.exp(lt) * ls, 1)))
    assert distillation_loss(S, T, "reverse-kl", tau).item() == pytest.approx(tau**2 * kl_st)
    assert distillation_loss(S, T, "symmetric-kl", tau).item() == pytest.approx(tau**2 * (kl_ts + kl_st) / 2)
    assert distillation_loss(S, T, "brier", tau).item() == pytest.approx(np.mean(np.sum((np.exp(ls) - np.exp(lt)) ** 2, 1)))
    hard = -np.mean(np_log_softmax(s)[np.arange(9), t.argmax(1)])
    assert distillation_loss(S, T, "hard", tau).item() == pytest.approx(hard)
    with pytest.raises(ValueError, match="allowed"):
        distillation_loss(S, T, "cosine", tau)


def test_alpha_mixes_label_cross_entropy_on_real_rows_only():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    y = np.array([0, 1, -1, 3, -1, 2, 4, 0])
    S, T, Y = map(torch.tensor, (s, t, y))
    real = y >= 0
    ce = -np.mean(np_log_softmax(s)[np.arange(8)[real], y[real]])
    assert label_loss(S, Y).item() == pytest.approx(ce)
    kd = distillation_loss(S, T, "kl", 4.0).item()
    assert total_loss(S, T, Y, "kl", 4.0, 0.3).item() == pytest.approx(0.7 * kd + 0.3 * ce)
    assert total_loss(S, T, Y, "kl", 4.0, 0.0).item() == pytest.approx(kd)


def test_mixed_label_loss_weights_both_sources():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(4, 3))
    y = np.array([0, 1, 2, -1])
    perm = np.array([1, 0, 3, 2])
    lam = 0.25
    mix = Mix(perm=torch.tensor(perm), lam=torch.tensor(lam, dtype=torch.float64))
    lp = np_log_softmax(s)
    rows = [0, 1]  # rows 2 and 3 involve an unlabelled source
    expected = np.mean([-(lam * lp[i, y[i]] + (1 - lam) * lp[i, y[perm[i]]]) for i in rows])
    assert label_loss(torch.tensor(s), torch.tensor(y), mix).item() == pytest.approx(expected)


def ref_kl_terms(t, s):
    """Per-row KL(p_t ‖ p_s) by the definition: a class with p_t = 0 adds nothing; everything else,
    NaN included, is summed as it is."""
    lt, ls = np_log_softmax(t), np_log_softmax(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        pt = np.exp(lt)
        terms = np.where(pt == 0, 0.0, pt * (lt - ls))
    return terms.sum(axis=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_student_logits_give_a_nan_kl_never_zero(bad):
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    s[2, 1] = bad
    with np.errstate(invalid="ignore"):
        expected = ref_kl_terms(t, s)
    assert np.isnan(expected[2]) or np.isinf(expected[2])
    got = metrics.kl_sum(torch.tensor(t), torch.tensor(s)).item()
    assert not np.isfinite(got)
    assert not np.isfinite(metrics.predictive_kl(torch.tensor(t), torch.tensor(s)))
    acc = metrics.FidelityAccumulator("cpu")
    acc.add(torch.tensor(s), torch.tensor(t), torch.arange(6) % 5)
    assert np.isnan(acc.result()["kl"]) or np.isinf(acc.result()["kl"])


def test_a_zero_teacher_probability_still_adds_nothing():
    """The one case the old nan_to_num was there for: p_t = 0 exactly (log p_t = -inf)."""
    t = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]])
    s = np.array([[0.3, 0.1, -0.2], [1.0, -1.0, 0.0]])
    expected = ref_kl_terms(t, s).sum()
    assert np.isfinite(expected) and expected > 0
    assert metrics.kl_sum(torch.tensor(t), torch.tensor(s)).item() == pytest.approx(expected, rel=1e-9)
