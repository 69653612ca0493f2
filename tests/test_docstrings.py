"""Docstring examples with expected output run as doctests, so they cannot rot."""

import doctest

import pytest

import animegen_utils.pipelines
import animegen_utils.prompts
import animegen_utils.published
import animegen_utils.toyworld.render

MODULES = [animegen_utils.prompts, animegen_utils.pipelines, animegen_utils.published, animegen_utils.toyworld.render]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    globs = dict(vars(module))
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs=globs) if t.examples and all(e.want for e in t.examples[-1:])]
    assert tests, f"{module.__name__} has no checked examples"
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module.__name__}"
