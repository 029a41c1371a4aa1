"""E12, the independent-student control (`eval.independent = true`), through the real CLI.

The run's record must carry the test agreement and KL between *this* run's teacher and a student
distilled from an independent teacher (other seeds). The numbers are checked against a reference
computed here, in numpy, from the checkpoints the run left on disk.
"""
from __future__ import annotations

import numpy as np
import torch

from kernels.data import load_dataset
from tests.cli_helpers import json_out, kdtui, tiny_spec, write
from tests.reference import lenet_log_probs


def test_independent_student_is_measured_against_this_runs_teacher(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "e12.toml", tiny_spec("e12", teacher_epochs=2, student_epochs=2, extra="[eval]\nindependent = true"))
    result = kdtui("run", spec, "--json", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    record = json_out(result)
    assert record["status"] == "done"

    roles = {t["role"]: t for t in record["teachers"]}
    assert set(roles) == {"distilled", "independent"}
    assert roles["distilled"]["key"] != roles["independent"]["key"]

    teacher_state = torch.load(ws / "teachers" / roles["distilled"]["key"] / "teacher.pt", weights_only=True)["final_state"]
    student_state = torch.load(ws / record["id"] / "independent.pt", weights_only=True)["model"]
    dataset = load_dataset("digits", root=tmp_path, download=False)
    test_images = dataset.test.images
    teacher_logp = lenet_log_probs(teacher_state, test_images, dataset.mean, dataset.std)
    student_logp = lenet_log_probs(student_state, test_images, dataset.mean, dataset.std)

    agreement = float(np.mean(teacher_logp.argmax(1) == student_logp.argmax(1)))
    kl = float(np.mean(np.sum(np.exp(teacher_logp) * (teacher_logp - student_logp), axis=1)))
    metrics = record["metrics"]
    # Same weights, same images: equal up to a float near-tie flipping one example's argmax.
    assert abs(metrics["independent_test_agreement"] - agreement) <= 1 / len(test_images) + 1e-12
    assert abs(metrics["independent_test_kl"] - kl) < 1e-4
    # The distilled student's own numbers are still there, measured against the same teacher.
    assert 0.0 <= metrics["test_agreement"] <= 1.0


def test_a_second_run_with_the_same_seed_reuses_both_teacher_sets(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "e12.toml", tiny_spec("e12", student_epochs=1, extra="[eval]\nindependent = true"))
    first = json_out(kdtui("run", spec, "--json", "--workspace", ws))
    second = json_out(kdtui("run", spec, "--json", "--workspace", ws))
    assert [t["reused"] for t in first["teachers"]] == [False, False]
    assert [t["reused"] for t in second["teachers"]] == [True, True]
    assert second["metrics"]["independent_test_agreement"] == first["metrics"]["independent_test_agreement"]
