"""Bad input through the real CLI: one clear line on stderr, exit 2, no traceback, nothing written.

Exit code 2 is bad input (README), and a bad spec names the field, the bad value and what is
allowed, exits 2 and writes no run (docs/architecture.md, "Rules that hold everywhere"). Each case
runs `kdtui run SPEC --workspace W` as a real subprocess (all cases at once, a few at a time, to keep the suite fast) and then checks that
the workspace holds no record and no run folder.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_helpers import kdtui, run_folders, store, tiny_spec

# (id, spec text or None for "no such file", extra CLI args, substrings the message must contain)
BAD_INPUT = [
    ("unknown-key", "[distill]\ntemprature = 4.0\n", [],
     ["unknown key 'distill.temprature'", "did you mean 'temperature'"]),
    ("unknown-section", "[dsitill]\ntemperature = 4.0\n", [], ["'dsitill'", "did you mean 'distill'"]),
    ("toml-syntax", "name = 'x'\n\n[teacher\nepochs = 3\n", [], ["line 3", "invalid TOML"]),
    ("wrong-type", "[teacher]\nepochs = 'ten'\n", [], ["teacher.epochs = 'ten'", "must be an integer"]),
    ("wrong-type-bool", "[data]\ndownload = 1\n", [], ["data.download = 1", "must be true or false"]),
    ("negative-epochs", "[student]\nepochs = -3\n", [], ["student.epochs = -3", "must be >= 1"]),
    ("tau-zero", "[distill]\ntemperature = 0\n", [], ["distill.temperature = 0", "must be > 0"]),
    ("tau-negative", "[distill]\ntemperature = -1.5\n", [], ["distill.temperature = -1.5", "must be > 0"]),
    ("lambda-range", "[student]\ninit = 'interpolate'\ninit_lambda = 1.5\n", [],
     ["student.init_lambda = 1.5", "must be between 0 and 1"]),
    ("members-zero", "[teacher]\nmembers = 0\n", [], ["teacher.members = 0", "must be >= 1"]),
    ("unknown-model", "[teacher]\nmodel = 'resnet21'\n", [],
     ["teacher.model = 'resnet21'", "unknown model", "allowed:", "lenet5"]),
    ("unknown-dataset", "[data]\ndataset = 'cifar1000'\n", [],
     ["data.dataset = 'cifar1000'", "unknown dataset", "digits"]),
    ("interpolate-architecture", "[teacher]\nmodel = 'lenet5'\n[student]\nmodel = 'resnet20'\ninit = 'interpolate'\n",
     [], ["student.init = 'interpolate' needs student.model == teacher.model", "resnet20 vs lenet5"]),
    ("sweep-path", "[sweep]\n'distill.temprature' = [1.0, 4.0]\n", [],
     ["sweep.'distill.temprature'", "unknown field path", "did you mean 'distill.temperature'"]),
    ("sweep-value", "[sweep]\n'distill.temperature' = [1.0, 0.0]\n", [],
     ["sweep.'distill.temperature'[1] = 0.0", "must be > 0"]),
    ("sweep-not-list", "[sweep]\nseed = 3\n", [], ["sweep.'seed' = 3", "non-empty list"]),
    ("augment-name", "[distill]\naugment = ['crop', 'flip']\n", [],
     ["distill.augment[1] = 'flip'", "unknown augmentation", "allowed:"]),
    ("extra-item", "[data]\nextra = ['svhn:ten']\n", [], ["data.extra[0] = 'svhn:ten'", "N >= 1"]),
    ("extra-kind", "[data]\nextra = ['imagenet:100']\n", [], ["data.extra[0] = 'imagenet:100'", "unknown extra data kind"]),
    ("split-needed", "[data]\nstudent_splits = [1]\n", [], ["data.student_splits = [1]", "needs data.split > 0"]),
    ("missing-file", None, [], ["no such spec file"]),
    ("device-option", tiny_spec(), ["--device", "gpu"], ["--device", "device = 'gpu'", "must be auto, cpu, cuda or cuda:N"]),
    ("device-in-spec", "device = 'cuda:x'\n", [], ["device = 'cuda:x'", "must be auto, cpu, cuda or cuda:N"]),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run through the CLI, four processes at a time; case id -> (spec path, ws, result)."""
    root = tmp_path_factory.mktemp("bad_input")

    def one(case):
        case_id, text, args, _ = case
        spec = root / f"{case_id}.toml"
        if text is not None:
            spec.write_text(text)
        ws = root / f"ws-{case_id}"
        return case_id, (spec, ws, kdtui("run", spec, "--workspace", ws, *args, timeout=120))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, BAD_INPUT))


def test_corpus_is_large_enough():
    assert len(BAD_INPUT) >= 15


@pytest.mark.parametrize("case_id,text,args,expected", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(outcomes, case_id, text, args, expected):
    spec, ws, result = outcomes[case_id]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("error: "), message
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""
    assert str(spec.name) in message or case_id == "device-option"
    for part in expected:
        assert part in message, message
    # Nothing left behind: no record in the registry and no run folder.
    assert run_folders(ws) == []
    if ws.exists():
        assert store(ws).all() == []


def test_unknown_option_is_bad_input(tmp_path):
    result = kdtui("runs", "list", "--workspace", tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--frobnicate" in result.stderr


def test_unknown_run_id_is_bad_input(tmp_path):
    result = kdtui("runs", "show", "nope", "--workspace", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no run matches 'nope' in {tmp_path / 'kdtui.json'}"]
