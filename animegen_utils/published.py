"""The numbers the kit publishes: where each comes from, and whether it still holds.

Every measured number in the README, a model card or a notebook's prose is followed by
a marker naming the results file and the value in it (invisible where markdown renders)::

    eye colour 0.870<!--= eval_g7.5.json /adherence/eye_accuracy .3f p:/adherence/n -->

The marker holds the file (in ``benchmarks/results/``), a JSON pointer (RFC 6901; quote
it when a key has a space, write a key's ``|`` as ``\\|`` so that a table keeps its cells),
a format (Python's, plus an optional ``×`` suffix) and the kind of number, which sets how
far a re-measurement may move it (``TOLERANCES``):

* ``p:POINTER``: a proportion over the n found at POINTER in the same file; it may move
  within the 99 % interval of the difference of two binomial proportions;
* ``ratio``: within 15 % (a speed-up measured side by side in one run);
* ``abs:X`` / ``rel:X``: within X, absolutely or relatively;
* ``exact``: not at all (a count, a size);
* ``time``: seconds (or images per second) on one machine: reported, never judged.

``check`` fails when a document's written value differs from what its file renders to;
``render`` rewrites them from the files; ``drift`` compares committed results with a
fresh run's (``benchmarks/reproduce.py``, ``make reproduce``).

>>> text = "eyes **0.870<!--= e.json /eyes .3f p:/n -->**"
>>> [(n.file, n.pointer, n.fmt, n.kind, n.written) for n in find_numbers(text)]
[('e.json', '/eyes', '.3f', 'p:/n', '0.870')]
>>> render_value(0.8700001, ".3f"), render_value(0.0301, ".1%"), render_value(1.214, ".2f×")
('0.870', '3.0%', '1.21×')
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: A value, then its marker. The value is what a reader sees; the marker says where it comes from.
#: It starts where a number starts: not inside one ("1.2.3"), and a dash right after a word or a
#: marker is a range's ("0.23<!--= ... -->-0.30"), not the second number's sign.
MARKER = re.compile(r"(?P<value>(?:(?<![\w.>])[-+−])?(?<![\d.])\d[\d,]*(?:\.\d+)?(?:%|×)?)"
                    r"<!--=\s*(?P<spec>[^>]*?)\s*-->")
KINDS = ("p", "ratio", "abs", "rel", "exact", "time")
KIND_FORMS = "p:/POINTER-to-n, ratio, abs:X, rel:X, exact, time"
#: How far a re-measured number may move, per kind (``quick`` widens them for CI's small runs).
TOLERANCES = {"ratio": 0.15, "ratio_quick": 0.35, "z": 2.576}


@dataclass(frozen=True)
class Number:
    """One published number: where it is written and where it comes from."""

    file: str
    pointer: str
    fmt: str
    kind: str
    written: str
    line: int
    start: int  # offsets of the written value in the document
    end: int


def _valid_kind(kind: str) -> bool:
    """Whether ``kind`` is one of ``KIND_FORMS``, with the argument its form asks for."""
    name, colon, arg = kind.partition(":")
    if name == "p":
        return arg.startswith("/")
    if name in ("abs", "rel"):
        try:
            return float(arg) >= 0
        except ValueError:
            return False
    return name in KINDS and not colon


def find_numbers(text: str) -> list[Number]:
    """Every marked number in ``text`` (raises ``ValueError`` naming a malformed marker)."""
    numbers = []
    for m in MARKER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        try:
            parts = shlex.split(m.group("spec"))
        except ValueError:  # an unclosed quote
            parts = []
        if len(parts) != 4 or not parts[1].startswith("/") or not _valid_kind(parts[3]):
            raise ValueError(f"line {line}: marker {m.group(0)!r} is not '<!--= FILE /POINTER FORMAT KIND -->' "
                             f"with KIND one of {KIND_FORMS}")
        numbers.append(Number(parts[0], parts[1], parts[2], parts[3], m.group("value"), line,
                              m.start("value"), m.end("value")))
    # A marker with no number right before it ("3.0 %<!--=") would otherwise be skipped unseen.
    attached = {n.end for n in numbers}
    for m in re.finditer("<!--=", text):
        if m.start() not in attached:
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(f"line {line}: marker {text[m.start():m.start() + 60]!r}... does not follow a number "
                             "(write the value, then the marker, with no space between)")
    return numbers


def lookup(data: Any, pointer: str) -> Any:
    """The value at a JSON pointer (``/a/0/b``; ``~1`` is ``/``, ``~0`` is ``~``)."""
    value = data
    for raw in pointer.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, list):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            have = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
            raise KeyError(f"{pointer}: no {key!r} (there: {have})")
    return value


def render_value(value: Any, fmt: str) -> str:
    """``value`` as a reader sees it: Python's ``format``, plus an optional ``×`` suffix."""
    suffix = "×" if fmt.endswith("×") else ""
    return format(value, fmt[:len(fmt) - len(suffix)]) + suffix


def _load(results_dir: Path, name: str, cache: dict) -> Any:
    if name not in cache:
        path = results_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        cache[name] = json.loads(path.read_text(encoding="utf-8"))
    return cache[name]


def _rendered(number: Number, results_dir: Path, cache: dict) -> str:
    return render_value(lookup(_load(results_dir, number.file, cache), number.pointer), number.fmt)


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose numbers are published: the README, the model cards, the notebooks."""
    return [root / "README.md", *sorted((root / "animegen_utils" / "models").glob("**/README.md")),
            *sorted((root / "notebooks").glob("*.ipynb"))]


def document_text(path: Path) -> str:
    """A document's prose (a notebook's markdown cells, joined)."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return raw
    cells = json.loads(raw)["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def check(paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR) -> list[str]:
    """One line per published number whose written value is not what its results file renders to."""
    problems, cache = [], {}
    for path in documents() if paths is None else paths:
        for n in find_numbers(document_text(path)):
            try:
                expected = _rendered(n, results_dir, cache)
            except (OSError, KeyError, IndexError, ValueError, TypeError) as err:
                problems.append(f"{_shown(path)}:{n.line}: {n.file} {n.pointer}: {err}")
                continue
            if expected != n.written:
                problems.append(f"{_shown(path)}:{n.line}: written {n.written}, {n.file} {n.pointer} gives {expected}")
    return problems


def render(paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR) -> int:
    """Rewrite every marked number from its results file; returns how many changed.

    Notebooks are left to their own cells (their prose is checked, not rewritten).
    """
    changed, cache = 0, {}
    for path in documents() if paths is None else paths:
        if path.suffix == ".ipynb":
            continue
        text = path.read_text(encoding="utf-8")
        pieces, last = [], 0
        for n in find_numbers(text):
            value = _rendered(n, results_dir, cache)
            changed += value != n.written
            pieces += [text[last:n.start], value]
            last = n.end
        new = "".join(pieces) + text[last:]
        if new != text:
            path.write_text(new, encoding="utf-8")
    return changed


def within(kind: str, committed: Any, fresh: Any, committed_data: Any, fresh_data: Any,
           quick: bool = False) -> tuple[bool | None, str]:
    """Whether a re-measured number holds, and the tolerance in words (None: not judged)."""
    name, _, arg = kind.partition(":")
    if name == "time":
        return None, "machine-dependent"
    if name == "exact":
        return committed == fresh, "exact"
    committed, fresh = float(committed), float(fresh)
    if name == "p":
        n1, n2 = float(lookup(committed_data, arg)), float(lookup(fresh_data, arg))
        pooled = (committed * n1 + fresh * n2) / (n1 + n2)
        allowed = TOLERANCES["z"] * math.sqrt(max(pooled * (1 - pooled), 0.25 / max(n1, n2)) * (1 / n1 + 1 / n2))
        return abs(fresh - committed) <= allowed, f"±{allowed:.3f} (99 %, n {n1:.0f}/{n2:.0f})"
    if name == "ratio":
        allowed = TOLERANCES["ratio_quick" if quick else "ratio"]
        return abs(fresh / committed - 1) <= allowed, f"±{allowed:.0%}"
    if name == "abs":
        return abs(fresh - committed) <= float(arg), f"±{float(arg):g}"
    if name == "rel":
        return abs(fresh / committed - 1) <= float(arg), f"±{float(arg):.0%}"
    raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")


def drift(fresh_dir: Path, paths: Iterable[Path] | None = None, results_dir: Path = RESULTS_DIR,
          quick: bool = False) -> list[dict[str, Any]]:
    """Each published number: committed value, fresh value (None where its file was not re-made), verdict."""
    rows, committed_cache, fresh_cache, seen = [], {}, {}, set()
    for path in documents() if paths is None else paths:
        for n in find_numbers(document_text(path)):
            if (n.file, n.pointer) in seen:
                continue
            seen.add((n.file, n.pointer))
            row = {"where": f"{_shown(path)}:{n.line}", "file": n.file, "pointer": n.pointer, "kind": n.kind,
                   "committed": n.written, "fresh": None, "ok": None, "tolerance": "not re-made"}
            if (fresh_dir / n.file).exists():
                old, new = _load(results_dir, n.file, committed_cache), _load(fresh_dir, n.file, fresh_cache)
                try:
                    a, b = lookup(old, n.pointer), lookup(new, n.pointer)
                    row["fresh"] = render_value(b, n.fmt)
                    # within() looks up a proportion's n too, which the fresh file may lack as well
                    row["ok"], row["tolerance"] = within(n.kind, a, b, old, new, quick)
                except (KeyError, IndexError, ValueError, TypeError) as err:
                    row.update(ok=False, tolerance=f"not comparable: {err}")
            rows.append(row)
    return rows


def drift_table(rows: list[dict[str, Any]]) -> str:
    verdict = {True: "ok", False: "DRIFTED", None: "-"}
    lines = [f"{'where':<44} {'number':<52} {'committed':>10} {'fresh':>10}  {'tolerance':<26} verdict"]
    for r in rows:
        lines.append(f"{r['where']:<44} {(r['file'] + ' ' + r['pointer'])[:52]:<52} {r['committed']:>10} "
                     f"{r['fresh'] or '-':>10}  {r['tolerance'][:26]:<26} {verdict[r['ok']]}")
    judged = [r for r in rows if r["ok"] is not None]
    lines.append(f"{sum(r['ok'] for r in judged)}/{len(judged)} re-made numbers within tolerance; "
                 f"{sum(r['fresh'] is None for r in rows)} not re-made, "
                 f"{sum(r['ok'] is None and r['fresh'] is not None for r in rows)} reported only")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def git_revision() -> str:
    """The commit the training code ran from (recorded in model cards), marked when the tree was dirty."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=ROOT).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """This process's command as a reader would type it: ``python -m PACKAGE ...`` or ``python SCRIPT ...``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    args = [shlex.quote(a) for a in sys.argv[1:]]
    if spec is not None and spec.name:
        return " ".join(["python -m", spec.name.removesuffix(".__main__"), *args])
    return " ".join(["python", _shown(Path(sys.argv[0])), *args])


def provenance(command: str | None = None) -> dict[str, Any]:
    """What produced a results file: command, git revision, library versions, threads, CPU."""
    import importlib.metadata

    import torch

    versions = {}
    for package in ("torch", "diffusers", "transformers", "peft", "accelerate"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"command": command or command_line(),
            "git_revision": git_revision(), "python": platform.python_version(), "versions": versions,
            "threads": torch.get_num_threads(), "cpu": _cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_results(path: str | Path, data: dict[str, Any], command: str | None = None) -> Path:
    """Write a results file atomically, with its ``provenance``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({**data, "provenance": provenance(command)}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check, render or compare the kit's published numbers.")
    parser.add_argument("action", choices=("check", "render", "drift"))
    parser.add_argument("--fresh", type=Path, help="drift: the folder of a fresh run's results files")
    parser.add_argument("--quick", action="store_true", help="drift: the quick run's wider ratio tolerance")
    args = parser.parse_args(argv)
    if args.action == "check":
        problems = check()
        print("\n".join(problems) or f"{sum(len(find_numbers(document_text(p))) for p in documents())} published numbers "
                                      "match their results files")
        return 1 if problems else 0
    if args.action == "render":
        print(f"{render()} numbers rewritten from their results files")
        return 0
    if args.fresh is None:
        parser.error("drift needs --fresh DIR")
    rows = drift(args.fresh, quick=args.quick)
    print(drift_table(rows))
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
