"""One short label per metric and one way to number teachers, for every screen and table.

The contract names (`test_agreement`, ...) stay in JSON, CSV and the registry; people read the
labels. Teachers are numbered from 1 (`teacher 1`, short `T1`), whatever index the events carry
(the engine counts members from 0).
"""
from __future__ import annotations

METRIC_LABELS: dict[str, str] = {
    "train_agreement": "train agr",
    "train_agreement_eval": "clean train agr",
    "test_agreement": "test agr",
    "test_kl": "test KL",
    "test_acc": "test acc",
    "test_nll": "test NLL",
    "test_ece": "test ECE",
    "teacher_test_acc": "teacher acc",
    "teacher_train_acc": "teacher train acc",
    "test_examples": "test examples",
    "train_loss": "loss",
    "lr": "lr",
    "epoch": "epoch",
}


def metric_label(name: str) -> str:
    """The short label of a contract metric name; an unknown name is shown as it is."""
    return METRIC_LABELS.get(name, name)


def metric_order(names) -> list[str]:
    """`names` in the order of METRIC_LABELS (every table lists metrics so), unknown names last,
    alphabetically."""
    rank = {name: i for i, name in enumerate(METRIC_LABELS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def teacher_label(index: int, total: int | None = None) -> str:
    """'teacher 1' or 'teacher 1/3' for the member with 0-based event index `index`."""
    number = (index or 0) + 1
    return f"teacher {number}/{total}" if total else f"teacher {number}"


def teacher_short(index: int) -> str:
    """'T1' for the member with 0-based event index `index`."""
    return f"T{(index or 0) + 1}"
