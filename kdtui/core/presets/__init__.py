"""The paper's experiments as ready-made specs (E1-E12, docs/experiments.md), each at two scales.

The specs are ordinary TOML files next to this module, `<stem>.<scale>.toml`, that a user can copy
and edit: `paper` is the paper's setting (CIFAR-100 / MNIST, the appendix's hyper-parameters), `tiny`
the same structure on the embedded `digits` data set with LeNet-5, runnable on a laptop CPU in
minutes. Each file opens with a comment block whose first line is the title, followed by
`# figure: ...`, `# varies: ...` and `# paper: ...` lines (an indented `#   ...` line continues them);
this module reads title, figure, varies and the paper's claim from there, so the file is the one
source of truth.

A sweep is a full grid, so a figure whose panels are not one grid is split into parts listed under
the figure: E3 into `e3` (augmentation) and `e3-data` (extra data), E4 into `e4a` (ensemble size)
and `e4b` (temperature), E6 into `e6a` (SGD) and `e6b` (Adam, its own learning rate), E11 into
`e11a` / `e11b` (ResNet teachers and students) and `e11c` (VGG-16), E12 into `e12a` (ensemble sizes)
and `e12b` (policies). Fig. 5's left and middle panels are the train agreement of e2's and e4a's runs.

E9 (ImageNet ResNet-50, IMDB BiLSTM) is out of scope: kdtui has neither the data sets nor the models.

Nothing here imports torch: the CLI and the terminal app list presets at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdtui.core.spec import Spec, SpecError, expand_sweep, parse_spec

__all__ = ["Preset", "PresetError", "SCALES", "PRESETS_DIR", "list_presets", "get_preset",
           "preset_path", "preset_text", "load_preset", "preset_for_run_name"]

PRESETS_DIR = Path(__file__).resolve().parent
SCALES: tuple[str, ...] = ("paper", "tiny")

# id -> file stem, in the paper's order. The stem is also the spec's name, plus "-<scale>".
_CATALOG: tuple[tuple[str, str], ...] = (
    ("e1", "e1-data-size"),
    ("e2", "e2-self-ensemble-data"),
    ("e3", "e3-augmentation"),
    ("e3-data", "e3-data"),
    ("e4a", "e4a-data-recycling"),
    ("e4b", "e4b-data-recycling-temperature"),
    ("e5", "e5-train-agreement"),
    ("e6a", "e6a-long-training-sgd"),
    ("e6b", "e6b-long-training-adam"),
    ("e7", "e7-interpolation"),
    ("e8", "e8-shared-init"),
    # E9 (ImageNet / IMDB) is out of scope: no such data sets or models in kdtui.
    ("e10", "e10-temperature-ensemble"),
    ("e11a", "e11a-capacity-resnet20"),
    ("e11b", "e11b-capacity-resnet56"),
    ("e11c", "e11c-capacity-vgg16"),
    ("e12a", "e12a-independent-control"),
    ("e12b", "e12b-independent-control-policies"),
)


class PresetError(SpecError, ValueError):
    """An unknown preset id or scale (one line, listing the known ones); a SpecError, so that the
    CLI's bad-input handling (exit 2) covers it."""


@dataclass(frozen=True, eq=False)
class Preset:
    id: str
    stem: str
    title: str
    varies: str
    paper_claim: str
    scales: dict[str, Path] = field(default_factory=dict)
    figure: str = ""          # the figure and panel it reproduces, e.g. "Fig. 4 (top row)"

    @property
    def figure_group(self) -> str:
        """The figure without its panel ("Fig. 4"): the heading its parts are listed under."""
        return self.figure.split(" (")[0]

    def path(self, scale: str) -> Path:
        if scale not in self.scales:
            raise PresetError(f"unknown scale {scale!r} for preset {self.id}; known: {', '.join(self.scales)}")
        return self.scales[scale]

    def text(self, scale: str) -> str:
        return self.path(scale).read_text(encoding="utf-8")

    def spec(self, scale: str) -> Spec:
        path = self.path(scale)
        return parse_spec(path.read_text(encoding="utf-8"), source=f"preset {self.id} ({scale}): {path.name}")

    def spec_name(self, scale: str) -> str:
        """The spec's `name`: sweep points are named `<name>[k=v,...]`."""
        return self.spec(scale).name

    def run_count(self, scale: str) -> int:
        """How many runs the scale's sweep makes (the grid's size)."""
        return len(expand_sweep(self.spec(scale), source=f"preset {self.id} ({scale})"))

    def header(self, scale: str) -> dict[str, str]:
        """The scale file's own title / varies / paper lines (varies differs between scales)."""
        return _parse_header(self.text(scale))


def _parse_header(text: str) -> dict[str, str]:
    """title, figure, varies, paper from the leading comment block (see the module docstring)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    out: dict[str, str] = {"title": lines[0].strip() if lines else ""}
    key = None
    for line in lines[1:]:
        stripped = line.strip()
        head, sep, rest = stripped.partition(":")
        if sep and head in ("figure", "varies", "paper") and line.startswith(" ") and not line.startswith("  "):
            key = head
            out[key] = rest.strip()
        elif key is not None and line.startswith("   ") and stripped:
            out[key] += " " + stripped
        else:
            key = None
    return out


def _build(preset_id: str, stem: str) -> Preset:
    scales = {scale: PRESETS_DIR / f"{stem}.{scale}.toml" for scale in SCALES}
    header = _parse_header(scales["paper"].read_text(encoding="utf-8"))
    return Preset(id=preset_id, stem=stem, title=header.get("title", ""), varies=header.get("varies", ""),
                  paper_claim=header.get("paper", ""), scales=scales, figure=header.get("figure", ""))


def list_presets() -> list[Preset]:
    """Every preset, in the paper's order (E1 ... E12; E9 is not included)."""
    return [_build(preset_id, stem) for preset_id, stem in _CATALOG]


def _known_ids() -> str:
    return ", ".join(preset_id for preset_id, _ in _CATALOG)


def get_preset(preset_id: str) -> Preset:
    """The preset `preset_id` (case-insensitive, "E7" works); PresetError listing the known ids."""
    wanted = str(preset_id).strip().lower()
    for known, stem in _CATALOG:
        if known == wanted:
            return _build(known, stem)
    parts = [known for known, _ in _CATALOG if known[:-1] == wanted and known[-1] in "abc"]
    hint = (" (E9, ImageNet / IMDB, is not included)" if wanted == "e9"
            else f" ({wanted.upper()} is split into parts: {', '.join(parts)})" if parts else "")
    raise PresetError(f"unknown preset {preset_id!r}{hint}; known: {_known_ids()}")


def preset_path(preset_id: str, scale: str) -> Path:
    return get_preset(preset_id).path(scale)


def preset_text(preset_id: str, scale: str) -> str:
    """The preset's TOML, comments included (what `kdtui presets show` prints, ready to copy)."""
    return get_preset(preset_id).text(scale)


def load_preset(preset_id: str, scale: str) -> Spec:
    """The preset's validated spec (with its sweep)."""
    return get_preset(preset_id).spec(scale)


def preset_for_run_name(name: str) -> tuple[Preset, str] | None:
    """(preset, scale) whose spec produced a run named `name` (`<spec name>` or `<spec name>[...]`)."""
    for preset in list_presets():
        for scale in SCALES:
            base = f"{preset.stem}-{scale}"
            if name == base or name.startswith(base + "["):
                return preset, scale
    return None
