"""Metrics on the clean sets, summed over every process of a data-parallel run (each example once)."""
from __future__ import annotations

import torch
from torch import nn

from kernels.config import RunConfig
from kernels.ensemble import Ensemble
from kernels.metrics import FidelityAccumulator
from kernels.prepared import Prepared, load_teacher_ensemble, predict


def fidelity_on_test_set(cfg: RunConfig, prepared: Prepared, model: nn.Module, teachers: list) -> dict:
    """Agreement and KL of any model with the teachers' ensemble on the test set."""
    teacher = load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    images = prepared.rows(prepared.test_set.images)
    result = FidelityAccumulator(prepared.device)
    result.add(predict(model, prepared, images), predict(teacher, prepared, images))
    return result_over_processes(result, prepared)


def result_over_processes(acc: FidelityAccumulator, prepared: Prepared) -> dict:
    """The accumulator's metrics over every process's rows: each example counted once."""
    prepared.shards.sum_(acc.sums)
    prepared.shards.sum_(acc.bins)
    return acc.result()


def teacher_constants(teacher: Ensemble, prepared: Prepared, teacher_test: torch.Tensor,
                      test_labels: torch.Tensor) -> dict:
    """The ensemble's test and training accuracy: constants of the run, kept in every record."""
    test, train = FidelityAccumulator(prepared.device), FidelityAccumulator(prepared.device)
    test.add(teacher_test, labels=test_labels)
    train.add(predict(teacher, prepared, prepared.rows(prepared.teacher_set.images)),
              labels=prepared.rows(prepared.teacher_set.labels))
    return {"teacher_test_acc": result_over_processes(test, prepared)["acc"],
            "teacher_train_acc": result_over_processes(train, prepared)["acc"]}
