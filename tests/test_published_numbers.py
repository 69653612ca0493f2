"""Every number the README and the model cards publish is the one its results file holds.

The markers (``animegen_utils.published``) tie each written value to a JSON pointer in
``benchmarks/results/``; these tests check the committed documents, and that a hand edit,
a malformed marker or a re-measurement that moved too far is caught.
"""

import json
import shutil

import pytest

from animegen_utils import published
from animegen_utils.published import RESULTS_DIR, ROOT, check, documents, drift, find_numbers, render, within

README = ROOT / "README.md"


def _marked(path):
    return find_numbers(published.document_text(path))


def test_committed_documents_match_their_results_files():
    problems = check()
    assert problems == [], "\n".join(problems)
    counts = {path.relative_to(ROOT).as_posix(): len(_marked(path)) for path in documents()}
    assert sum(counts.values()) >= 20, counts
    assert counts["README.md"] >= 20, counts


def test_a_hand_edited_number_fails_the_check_naming_its_line(tmp_path):
    text = README.read_text(encoding="utf-8")
    eyes = ("eval_g7.5.json", "/eye_accuracy")
    number = next(n for n in find_numbers(text) if (n.file, n.pointer) == eyes)
    wrong = "0.950" if number.written != "0.950" else "0.951"
    copy = tmp_path / "README.md"
    copy.write_text(text[:number.start] + wrong + text[number.end:], encoding="utf-8")

    assert check([README]) == []
    problems = check([copy], results_dir=RESULTS_DIR)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{copy}:{number.line}:"), problems
    assert f"written {wrong}" in problems[0] and number.written in problems[0], problems


@pytest.mark.parametrize("marker", [
    "0.87<!--= e.json /eyes .3f proportion -->",   # unknown kind
    "0.87<!--= e.json /eyes .3f p -->",            # a proportion without its n
    "0.87<!--= e.json /eyes .3f abs:wide -->",     # a tolerance that is not a number
    "0.87<!--= e.json eyes .3f exact -->",         # a pointer without its leading /
    "0.87<!--= e.json /eyes exact -->",            # no format
])
def test_a_malformed_marker_raises_naming_the_valid_kinds(marker):
    with pytest.raises(ValueError, match="ratio, abs:X, rel:X, exact, time"):
        find_numbers(f"eyes {marker}")


def test_a_marker_not_right_after_its_number_is_refused():
    with pytest.raises(ValueError, match="does not follow a number"):
        find_numbers("swaps in 3.0 %<!--= e.json /swap .1% p:/n --> of requests")


def test_a_range_dash_is_not_the_second_numbers_sign():
    text = "emotion 0.23<!--= e.json /lo .2f abs:0.05 -->-0.30<!--= e.json /hi .2f abs:0.05 --> at"
    assert [n.written for n in find_numbers(text)] == ["0.23", "0.30"]


def test_within_proportions():
    data = {"n": 200}
    assert within("p:/n", 0.90, 0.93, data, data)[0] is True
    assert within("p:/n", 0.93, 0.90, data, data)[0] is True
    assert within("p:/n", 0.90, 0.70, data, data)[0] is False
    assert within("p:/n", 0.70, 0.90, data, data)[0] is False


def test_within_ratios_exact_and_time():
    assert within("ratio", 2.0, 2.2, {}, {})[0] is True
    assert within("ratio", 2.0, 1.5, {}, {})[0] is False
    assert within("exact", 40960, 40960, {}, {})[0] is True
    assert within("exact", 40960, 40961, {}, {})[0] is False
    assert within("time", 0.4, 4.0, {}, {})[0] is None


def _fresh_copy(tmp_path, name):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(RESULTS_DIR / name, fresh / name)
    return fresh


def test_drift_flags_a_number_moved_beyond_its_tolerance(tmp_path):
    name, pointer = "eval_g7.5.json", "/eye_accuracy"
    fresh = _fresh_copy(tmp_path, name)

    rows = [r for r in drift(fresh, paths=[README]) if r["file"] == name]
    assert rows and all(r["ok"] is True for r in rows), rows

    data = json.loads((fresh / name).read_text())
    moved_to = data["eye_accuracy"] - 0.25  # n = 200: the 99 % band is about ±0.1
    data["eye_accuracy"] = moved_to
    (fresh / name).write_text(json.dumps(data))
    rows = [r for r in drift(fresh, paths=[README]) if r["file"] == name]
    moved = [r for r in rows if r["pointer"] == pointer]
    assert len(moved) == 1 and moved[0]["ok"] is False, rows
    assert moved[0]["where"].startswith("README.md:") and moved[0]["fresh"] == f"{moved_to:.3f}"
    assert all(r["ok"] is True for r in rows if r["pointer"] != pointer), rows


def test_drift_leaves_numbers_whose_file_was_not_remade_unjudged(tmp_path):
    fresh = _fresh_copy(tmp_path, "eval_g7.5.json")
    others = [r for r in drift(fresh, paths=[README]) if r["file"] != "eval_g7.5.json"]
    assert others and all(r["ok"] is None and r["fresh"] is None for r in others)


def test_render_rewrites_a_wrong_value_from_its_file(tmp_path):
    text = README.read_text(encoding="utf-8")
    number = next(n for n in find_numbers(text) if n.file == "lora.json" and n.kind == "exact")
    copy = tmp_path / "README.md"
    copy.write_text(text[:number.start] + "12,345" + text[number.end:], encoding="utf-8")
    assert check([copy]) != []

    assert render(paths=[copy]) == 1
    assert copy.read_text(encoding="utf-8") == text
    assert check([copy]) == [] and render(paths=[copy]) == 0


def _reproduce_module():
    import importlib.util
    import sys

    path = published.ROOT / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_published_results_file_is_re_made_by_a_reproduce_stage():
    reproduce = _reproduce_module()
    made = {f for stage in reproduce.STAGES for f in stage.files}
    missing = sorted(reproduce.published_files() - made - set(reproduce.HISTORICAL) - {reproduce.RUN_RECORD})
    assert missing == [], f"published numbers come from files no reproduce stage re-makes: {missing}"
    for stage in reproduce.STAGES:
        command = stage.full + (stage.quick or ())
        scripts = [a for a in command if a.endswith(".py")]
        assert all((published.ROOT / s).exists() for s in scripts), stage
        # every file a stage promises is written into the fresh folder, not into the committed one
        assert all(any(a.startswith(reproduce.OUT) for a in argv) for argv in (stage.full, stage.quick) if argv)


def test_a_results_file_records_what_produced_it(tmp_path):
    path = published.write_results(tmp_path / "sub" / "r.json", {"accuracy": 0.9, "n": 10})
    data = json.loads(path.read_text())
    assert data["accuracy"] == 0.9
    made = data["provenance"]
    assert made["command"].startswith("python ") and made["git_revision"] not in ("", None)
    assert made["versions"]["torch"] and made["versions"]["diffusers"] and made["threads"] >= 1 and made["cpu"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left beside it
