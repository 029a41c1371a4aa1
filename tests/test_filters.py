"""The selection syntax (`τ=4 seed=1 status:done words`) that the notebook API shares with the CLI."""
from __future__ import annotations

import pytest

from kdtui.analysis.filters import FilterError, matches, parse_selection

RUN = {"id": "261203-120000-00a0", "name": "kd-sweep[seed=1]", "status": "done",
       "spec": {"seed": 1, "device": "cpu", "distill": {"temperature": 4.0, "loss": "reverse-kl", "augment": ["crop", "hflip"]},
                "teacher": {"lr": 0.1, "nesterov": True}, "student": {"lr": 0.05}}}


@pytest.mark.parametrize("text", [
    "", "τ=4", "temperature=4", "distill.temperature=4.0", "seed=1", "loss=reverse-kl", "loss=REVERSE-KL",
    "augment=crop,hflip", "augment=Crop,HFlip", "τ=4 seed=1", "status:done", "STATUS:Done", "sweep", "00a0", "lr=0.05", "lr=0.1",
    "nesterov=true", "τ=4e0",
])
def test_terms_that_hold(text):
    assert matches(RUN, text)


@pytest.mark.parametrize("text", [
    "τ=1", "seed=0", "seed=1 τ=1", "status:failed", "other", "loss=kl", "nesterov=false", "lr=0.2",
    "nosuchkey=1", "augment=crop", "τ=four", "device=4",
])
def test_terms_that_do_not(text):
    assert not matches(RUN, text)


def test_terms_words_and_statuses_parse_apart():
    assert parse_selection("a=1 status:done b=2 W") == parse_selection("a=1 b=2 w status:DONE")
    assert parse_selection("a=1 b=2 w").terms == (("a", "1"), ("b", "2"))


@pytest.mark.parametrize("text", ["=4", "τ=", "status:"])
def test_an_unreadable_term_is_one_line(text):
    with pytest.raises(FilterError) as raised:
        parse_selection(text)
    assert "\n" not in str(raised.value)


def test_a_row_without_spec_matches_words_and_status_only():
    row = {k: v for k, v in RUN.items() if k != "spec"}
    assert matches(row, "status:done sweep") and not matches(row, "τ=4")
    assert parse_selection("τ=4").needs_spec and not parse_selection("status:done sweep").needs_spec
