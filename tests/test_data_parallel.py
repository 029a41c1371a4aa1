"""`kdtui run --nproc 2`: one run as two data-parallel processes (torchrun, gloo on CPU).

The record's test agreement must be the agreement over the whole test set, counted once across the
two processes: it is checked against the saved student and teacher evaluated here, in one process,
with numpy.
"""
from __future__ import annotations

import numpy as np
import torch

from kernels.data import load_dataset
from tests.cli_helpers import json_out, kdtui, tiny_spec, write
from tests.reference import lenet_log_probs


def test_two_gloo_processes_count_the_test_set_once(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "ddp.toml", tiny_spec("ddp", teacher_epochs=3, student_epochs=3, student_batch=64))
    result = kdtui("run", spec, "--nproc", "2", "--json", "--workspace", ws, timeout=600)
    assert result.returncode == 0, result.stderr + (next(ws.glob("*/torchrun.log")).read_text()[-3000:])
    record = json_out(result)
    assert record["status"] == "done" and record["nproc"] == 2

    dataset = load_dataset("digits", root=tmp_path, download=False)
    test = dataset.test
    assert record["metrics"]["test_examples"] == len(test.labels)  # every test example, once

    teacher = torch.load(ws / "teachers" / record["teachers"][0]["key"] / "teacher.pt", weights_only=True)
    student = torch.load(ws / record["id"] / "student.pt", weights_only=True)["model"]
    teacher_logp = lenet_log_probs(teacher["final_state"], test.images, dataset.mean, dataset.std)
    student_logp = lenet_log_probs(student, test.images, dataset.mean, dataset.std)
    agreement = float(np.mean(teacher_logp.argmax(1) == student_logp.argmax(1)))
    accuracy = float(np.mean(student_logp.argmax(1) == test.labels.numpy()))
    # Equal up to a float near-tie flipping one example's argmax.
    assert abs(record["metrics"]["test_agreement"] - agreement) <= 1 / len(test.labels) + 1e-12
    assert abs(record["metrics"]["test_acc"] - accuracy) <= 1 / len(test.labels) + 1e-12
    assert record["metrics"]["test_agreement"] > 0.5  # it learned: not a chance-level coincidence


def test_nproc_is_foreground_and_local_only(tmp_path):
    spec = write(tmp_path / "t.toml", tiny_spec("ddp"))
    for extra in (("--detach",), ("--executor", "ray"), ("--nproc", "0")):
        args = ("--nproc", "2", *extra) if extra[0] != "--nproc" else extra
        result = kdtui("run", spec, *args, "--workspace", tmp_path / "ws")
        assert result.returncode == 2 and result.stderr.startswith("error: ") and "--nproc" in result.stderr
