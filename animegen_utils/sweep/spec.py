"""Sweep specs: which parameters vary (axes or explicit rows), which stay fixed, and what scores each image.

A spec is a dict, a ``SweepSpec`` or a small YAML/TOML file::

    name: emotion-style
    axes:
      emotion: [happy, sad, angry, surprised, neutral]
      style: [casual, formal, school_uniform]
      seed: {start: 0, count: 4}      # or a list: [0, 1, 2, 3]
    fixed: {model: tiny, steps: 20, guidance: 7.5}
    scorers: [probe]
    batch_size: 8
    threads: 1

>>> spec = load_spec("sweep.yaml")
>>> spec.axes["seed"]
[0, 1, 2, 3]

Grids that are not a product of axes (the evaluation's random requests, each with its own
seed) list their images as ``rows``: one dict of parameters per image, each value checked
like an axis value. Rows are crossed with any axes (every row for every combination of the
axes, the axes slowest) or stand alone::

    rows:
      - {emotion: happy, style: casual, hair_color: pink, eye_color: blue, seed: 1000000}
      - {emotion: sad, style: formal, hair_color: black, eye_color: red, seed: 1000001}
    axes: {steps: [8, 20]}            # optional
    fixed: {model: tiny}

>>> len(load_spec({"rows": [{"prompt": "1girl", "seed": 0}, {"prompt": "1girl", "seed": 1}]}).rows)
2

Every value of every axis and row is checked here, before any pipeline is loaded or any image is
drawn: an unknown parameter, a value outside its range, an empty axis or an unknown scorer
is a ``SweepSpecError`` naming what is accepted.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..hires import UPSCALERS
from ..pipelines import DEFAULT_SETTINGS, RECOMMENDED_SETTINGS, SCHEDULERS, TINY
from ..prompts import EMOTIONS, STYLES

MAX_SEED = 2**32
#: The scorers a spec may ask for: the attribute probe (built-in model) and CLIP score (needs a CLIP model).
SCORERS: tuple[str, ...] = ("probe", "clip")
#: Tasks a sweep can draw: img2img rows need ``image`` (a file) and take ``strength``.
SWEEP_TASKS: tuple[str, ...] = ("txt2img", "img2img")
SPEC_KEYS: tuple[str, ...] = ("name", "axes", "rows", "fixed", "scorers", "batch_size", "threads", "clip_model")


class SweepSpecError(ValueError):
    """A spec the sweep cannot run: raised before any image is drawn."""


def _real(minimum: float | None = None, maximum: float | None = None, low_open: bool = False):
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError("not a number")
        if (minimum is not None and (v <= minimum if low_open else v < minimum)) or \
                (maximum is not None and v > maximum):
            raise ValueError("out of range")
        return float(v)  # 7 and 7.0 are the same guidance: one row id
    return check


def _int(minimum: int | None = None, maximum: int | None = None, multiple: int = 1):
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError("not an integer")
        if (minimum is not None and v < minimum) or (maximum is not None and v >= maximum) or v % multiple:
            raise ValueError("out of range")
        return int(v)
    return check


def _text(one_tag: bool = False, choices: tuple[str, ...] | None = None):
    def check(v: Any) -> Any:
        if not isinstance(v, str) or not v.strip():
            raise ValueError("not a non-empty string")
        if choices is not None and v not in choices:
            raise ValueError("not a valid choice")
        if one_tag and "," in v:
            raise ValueError("more than one tag")
        return v
    return check


def _bool(v: Any) -> Any:
    if not isinstance(v, bool):
        raise ValueError("not true/false")
    return v


@dataclass(frozen=True)
class Param:
    """One sweepable parameter: where it goes, how it is checked, what is accepted (for errors)."""

    name: str
    kind: str  # "pipeline" (load_pipeline), "prompt" (the prompt's words) or "generate"
    arrow: str  # column type in the results table: string, int64, float64, bool
    check: Callable[[Any], Any]
    accepted: str


_P = [
    Param("model", "pipeline", "string", _text(), f"{TINY!r}, a Hub id, a diffusers folder or a single file"),
    Param("scheduler", "pipeline", "string", _text(choices=tuple(SCHEDULERS)), ", ".join(SCHEDULERS)),
    Param("clip_skip", "pipeline", "int64", _int(0), "an integer >= 0"),
    Param("lcm_lora", "pipeline", "string", _text(), "an LCM-LoRA id, folder or file (scheduler lcm)"),
    Param("task", "pipeline", "string", _text(choices=SWEEP_TASKS), ", ".join(SWEEP_TASKS)),
    Param("emotion", "prompt", "string", _text(choices=EMOTIONS), ", ".join(EMOTIONS)),
    Param("style", "prompt", "string", _text(choices=STYLES), ", ".join(STYLES)),
    Param("hair_color", "prompt", "string", _text(one_tag=True), "one tag, e.g. pink"),
    Param("eye_color", "prompt", "string", _text(one_tag=True), "one tag, e.g. blue"),
    Param("hairstyle", "prompt", "string", _text(one_tag=True), "one tag, e.g. twintails"),
    Param("accessory", "prompt", "string", _text(one_tag=True), "one tag or none, e.g. glasses"),
    Param("prompt", "prompt", "string", _text(), "any prompt text (instead of emotion and style)"),
    Param("negative", "generate", "string", _text(), "any negative prompt text"),
    Param("seed", "prompt", "int64", _int(0, MAX_SEED), f"an integer in [0, {MAX_SEED})"),
    Param("steps", "generate", "int64", _int(1), "an integer >= 1"),
    Param("guidance", "generate", "float64", _real(0.0), "a number >= 0"),
    Param("width", "generate", "int64", _int(8, multiple=8), "a multiple of 8"),
    Param("height", "generate", "int64", _int(8, multiple=8), "a multiple of 8"),
    Param("weighting", "generate", "bool", _bool, "true or false"),
    Param("hires_scale", "generate", "float64", _real(1.0, 8.0), "a number in [1, 8]"),
    Param("hires_strength", "generate", "float64", _real(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    Param("hires_steps", "generate", "int64", _int(1), "an integer >= 1"),
    Param("hires_upscaler", "generate", "string", _text(choices=tuple(UPSCALERS)), ", ".join(UPSCALERS)),
    Param("lora", "generate", "string", _text(one_tag=True), "a LoRA name found in lora_dirs"),
    Param("lora_scale", "generate", "float64", _real(), "a number (the <lora:name:scale> weight)"),
    Param("lora_dirs", "generate", "string", _text(), "a folder of LoRAs"),
    Param("strength", "generate", "float64", _real(0.0, 1.0), "a number in [0, 1] (img2img)"),
    Param("image", "generate", "string", _text(), "an image file (img2img)"),
]
#: Every parameter a spec may name, in the results table's column order.
PARAMS: dict[str, Param] = {p.name: p for p in _P}
#: Parameters that change the prompt of one image; images that differ only in these share a batch.
PER_IMAGE: tuple[str, ...] = tuple(p.name for p in _P if p.kind == "prompt")
#: Parameters given only in ``fixed`` (folders, not values to compare).
FIXED_ONLY: tuple[str, ...] = ("lora_dirs",)


@dataclass
class SweepSpec:
    """A sweep: the product of ``axes`` (first axis slowest), crossed with the explicit ``rows``
    (each a dict of parameters; innermost), with ``fixed`` added to every row.

    ``batch_size`` and ``threads`` decide the exact bytes of every image (float rounding depends
    on the batch shape and the thread count), so a folder keeps the ones it was started with.
    """

    axes: dict[str, list[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    scorers: list[str] = field(default_factory=list)
    batch_size: int = 8
    threads: int = 1
    name: str = "sweep"
    clip_model: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    base_dir: str = "."  # relative image/lora_dirs paths are read from here (the spec file's folder)

    def settings(self) -> dict[str, Any]:
        """What a results folder is bound to: changing these changes images or columns of done rows."""
        return {"batch_size": self.batch_size, "threads": self.threads, "scorers": list(self.scorers),
                "clip_model": self.clip_model}

    def to_dict(self) -> dict[str, Any]:
        """The spec as ``load_spec`` reads it (``rows`` left out when there are none)."""
        data = asdict(self)
        if not data["rows"]:
            del data["rows"]
        return data


def _fail(message: str) -> None:
    raise SweepSpecError(message)


def _axis_values(name: str, raw: Any) -> list[Any]:
    if name == "seed" and isinstance(raw, Mapping):
        if set(raw) != {"start", "count"}:
            _fail(f"axis 'seed' as a range needs exactly start and count, e.g. {{start: 0, count: 4}}; got {dict(raw)}")
        start, count = raw["start"], raw["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            _fail(f"axis 'seed': count must be an integer >= 1; got {count!r}")
        raw = list(range(start, start + count)) if isinstance(start, int) else [start]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
        _fail(f"axis {name!r} must be a list of values, e.g. {name}: [a, b]; got {raw!r}")
    if not raw:
        _fail(f"axis {name!r} is empty: give at least one value ({PARAMS[name].accepted}), or move it to fixed")
    return list(raw)


def _checked(name: str, value: Any, where: str) -> Any:
    try:
        return PARAMS[name].check(value)
    except ValueError as err:
        raise SweepSpecError(f"{where}: {name}={value!r} is {err}; {name} must be {PARAMS[name].accepted}") from None


def _check_names(names, where: str) -> None:
    for name in names:
        if name not in PARAMS:
            _fail(f"Unknown sweep parameter {name!r} in {where}. Valid choices: {', '.join(PARAMS)}.")


def load_spec(source: SweepSpec | Mapping[str, Any] | str | Path) -> SweepSpec:
    """Read and check a spec (a ``SweepSpec``, a dict, or a ``.yaml``/``.yml``/``.toml``/``.json`` file).

    >>> load_spec({"axes": {"emotion": ["happy"], "style": ["casual"], "seed": [0, 1]},
    ...            "fixed": {"steps": 2}}).batch_size
    8
    """
    base_dir = "."
    if isinstance(source, SweepSpec):
        data = source.to_dict()
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Sweep spec not found: {path}")
        data = _read_file(path)
        base_dir = str(path.resolve().parent)
    if not isinstance(data, Mapping):
        _fail(f"A sweep spec is a mapping with keys {', '.join(SPEC_KEYS)}; got {type(data).__name__}")
    unknown = set(data) - set(SPEC_KEYS) - {"base_dir"}
    if unknown:
        _fail(f"Unknown sweep spec key(s) {', '.join(sorted(map(str, unknown)))}. "
              f"Valid choices: {', '.join(SPEC_KEYS)}.")
    axes_raw, fixed = data.get("axes") or {}, dict(data.get("fixed") or {})
    rows_raw = data.get("rows")
    if not isinstance(axes_raw, Mapping) or (not axes_raw and rows_raw is None):
        _fail("A sweep needs axes: a mapping of parameter -> list of values, e.g. axes: {seed: [0, 1, 2]}, "
              "or rows: a list of parameter dicts, e.g. rows: [{prompt: 1girl, seed: 0}]")
    _check_names(axes_raw, "axes")
    _check_names(fixed, "fixed")
    both = set(axes_raw) & set(fixed)
    if both:
        _fail(f"{', '.join(sorted(both))} given both as an axis and fixed; give each parameter once")
    for name in FIXED_ONLY:
        if name in axes_raw:
            _fail(f"{name} is a folder, not a value to sweep: put it in fixed")
    rows = _rows(rows_raw, set(axes_raw), set(fixed)) if rows_raw is not None else []
    axes = {}
    for name, raw in axes_raw.items():
        values = [_checked(name, v, f"axis {name!r}") for v in _axis_values(name, raw)]
        repeated = sorted({json.dumps(v) for v in values if values.count(v) > 1})
        if repeated:
            _fail(f"axis {name!r} repeats {', '.join(repeated)}: every row must be a different image")
        axes[name] = values
    fixed = {name: _checked(name, v, "fixed") for name, v in fixed.items()}
    spec = SweepSpec(axes=axes, fixed=fixed, scorers=list(data.get("scorers") or []),
                     batch_size=data.get("batch_size", 8), threads=data.get("threads", 1),
                     name=str(data.get("name", "sweep")), clip_model=data.get("clip_model"),
                     rows=rows, base_dir=str(data.get("base_dir", base_dir)))
    _check_run_settings(spec)
    _check_combinations(spec)
    return spec


def _rows(raw: Any, axes: set[str], fixed: set[str]) -> list[dict[str, Any]]:
    """Check the explicit rows: each a non-empty dict of parameters, each value checked like an axis value."""
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, (list, tuple)):
        _fail(f"rows must be a list of parameter dicts, e.g. rows: [{{prompt: 1girl, seed: 0}}]; got {raw!r}")
    if not raw:
        _fail(f"rows is empty: give at least one row (a dict of parameters: {', '.join(PARAMS)}), or leave rows out")
    rows = []
    for i, row in enumerate(raw):
        where = f"rows[{i}]"
        if not isinstance(row, Mapping) or not row:
            _fail(f"{where} must be a non-empty dict of parameters, e.g. {{prompt: 1girl, seed: 0}}; got {row!r}")
        _check_names(row, where)
        twice = sorted(set(row) & (axes | fixed))
        if twice:
            _fail(f"{where}: {', '.join(twice)} given both in a row and as an axis or fixed; give each parameter once")
        for name in FIXED_ONLY:
            if name in row:
                _fail(f"{where}: {name} is a folder, not a value to sweep: put it in fixed")
        rows.append({name: _checked(name, v, where) for name, v in row.items()})
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        key = json.dumps(row, sort_keys=True)
        if key in seen:
            _fail(f"rows[{i}] repeats rows[{seen[key]}] ({key}): every row must be a different image")
        seen[key] = i
    return rows


def _read_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    if suffix == ".toml":
        import tomllib  # Python 3.11+

        return tomllib.loads(text)
    if suffix == ".json":
        return json.loads(text)
    _fail(f"Sweep spec files are .yaml, .yml, .toml or .json; got {path.name!r}")


def _check_run_settings(spec: SweepSpec) -> None:
    for key in ("batch_size", "threads"):
        v = getattr(spec, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _fail(f"{key} must be an integer >= 1; got {v!r}")
    for s in spec.scorers:
        if s not in SCORERS:
            _fail(f"Unknown scorer {s!r}. Valid choices: {', '.join(SCORERS)}.")
    if len(set(spec.scorers)) != len(spec.scorers):
        _fail(f"scorers repeats a name: {spec.scorers}")
    if "clip" in spec.scorers and not spec.clip_model:
        _fail("scorer 'clip' needs clip_model: a CLIP model id or folder, e.g. openai/clip-vit-base-patch32")


def values(spec: SweepSpec, name: str, rows: list[dict[str, Any]] | None = None) -> list[Any]:
    """Every value ``name`` takes in the sweep (``[None]`` when the spec leaves it out).

    ``rows``: only these of the spec's explicit rows (default: all of them).
    """
    if name in spec.axes:
        return spec.axes[name]
    if name in spec.fixed:
        return [spec.fixed[name]]
    found = [r[name] for r in (spec.rows if rows is None else rows) if name in r]
    return list(dict.fromkeys(found)) or [None]


def default_steps_guidance(scheduler: str) -> tuple[int, float]:
    """``generate``'s own defaults for a scheduler, so that a row's id names the steps it is drawn with."""
    return RECOMMENDED_SETTINGS.get(scheduler, DEFAULT_SETTINGS)


def _check_combinations(spec: SweepSpec) -> None:
    """Check each kind of row (rows naming the same parameters are checked together)."""
    kinds: dict[frozenset, list[dict[str, Any]]] = {}
    for r in spec.rows:
        kinds.setdefault(frozenset(r), []).append(r)
    for names, rows in (kinds.items() or [(frozenset(), [])]):
        _check_given(spec, set(spec.axes) | set(spec.fixed) | set(names), lambda n: values(spec, n, rows))


def _check_given(spec: SweepSpec, given: set[str], values: Callable[[str], list[Any]]) -> None:
    words = {"emotion", "style"} & given
    if "prompt" in given and words:
        _fail(f"give either prompt (free text) or emotion and style (the kit's prompt), not both; got prompt and "
              f"{', '.join(sorted(words))}")
    if "prompt" not in given and words != {"emotion", "style"}:
        _fail("a sweep needs a prompt: emotion and style (built with build_prompt), or prompt (free text)")
    identity = {"hair_color", "eye_color", "hairstyle", "accessory"} & given
    if identity and "prompt" in given:
        _fail(f"{', '.join(sorted(identity))} build the kit's prompt; with prompt, write them into the text")
    if identity and not {"hair_color", "eye_color"} <= identity:
        _fail("a character needs both hair_color and eye_color (hairstyle and accessory are optional)")
    task = set(values("task"))
    if task & {"img2img"} and "image" not in given:
        _fail("task img2img needs image: the picture to redraw")
    if "img2img" not in task and ({"image", "strength"} & given):
        _fail("image and strength are for task img2img; add task: img2img to fixed")
    if "lora_scale" in given and "lora" not in given:
        _fail("lora_scale needs lora: the LoRA's name")
    if "lora" in given:
        from ..lora_tags import find_lora

        for name in values("lora"):
            find_lora(name, _resolve(spec, spec.fixed.get("lora_dirs")))  # names the folders it looked in
    if "image" in given:
        for img in values("image"):
            if not Path(_resolve(spec, img)).is_file():
                _fail(f"image file not found: {img!r} (relative paths are read from {spec.base_dir})")
    if "lcm_lora" in given and set(values("scheduler")) != {"lcm"}:
        _fail("lcm_lora is for scheduler lcm only; make scheduler fixed at lcm or drop lcm_lora")


def _resolve(spec: SweepSpec, path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else Path(spec.base_dir) / p)
