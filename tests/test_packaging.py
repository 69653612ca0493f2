"""pyproject.toml is the one source of dependencies; environment.yml only installs it."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_env() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_installs_the_package_and_nothing_else():
    env = load_env()
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [d for d in deps if isinstance(d, dict)]
    assert sorted(re.split(r"[=<> ]", d)[0] for d in conda) == ["pip", "python"]
    assert pip == [{"pip": ["-e .[all]"]}]


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = re.match(r">=\s*3\.(\d+)", project["requires-python"]).group(1)
    conda_python = next(d for d in load_env()["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert int(conda_python.split("=")[1].split(".")[1]) >= int(minimum)


def test_the_all_extra_covers_every_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    named = re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(",")
    assert sorted(named) == sorted(k for k in extras if k != "all")


def test_makefile_installs_from_pyproject_and_ci_calls_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[all]"' in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
