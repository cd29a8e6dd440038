"""What a package index and its users see: the license, the metadata, links that work off
GitHub, the version, the sdist, the wheel workflow and the docs site's link rewriting."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import e2ebackup
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/e2ebackup/e2ebackup"


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def cargo_workspace() -> dict[str, Any]:
    with (ROOT / "Cargo.toml").open("rb") as f:
        package: dict[str, Any] = tomllib.load(f)["workspace"]["package"]
        return package


def tool_environment(wheel_dir: Path) -> dict[str, str]:
    """maturin from this interpreter's environment, output to ``wheel_dir``."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, WHEEL_DIR=str(wheel_dir))


def test_license_is_the_full_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0" == cargo_workspace()["license"]
    assert project["license-files"] == ["LICENSE"]


def test_project_metadata_for_the_package_index() -> None:
    project = pyproject()["project"]
    assert project["authors"]
    urls = project["urls"]
    assert urls["Source"] == REPOSITORY == cargo_workspace()["repository"]
    assert all(url.startswith(REPOSITORY) for url in urls.values())
    classifiers = project["classifiers"]
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    minimum = tuple(int(n) for n in project["requires-python"].removeprefix(">=").split("."))
    versions = [
        tuple(int(n) for n in m.group(1).split("."))
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    ]
    assert minimum in versions
    assert all(v >= minimum for v in versions)


def test_dev_tools_are_not_public_extras() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert "lint" not in extras
    assert "bench" not in extras
    pinned = (ROOT / "requirements-dev.txt").read_text()
    for tool in ("mypy==", "ruff==", "pytest-benchmark==", "mkdocs==", "auditwheel==", "ziglang=="):
        assert tool in pinned
    # Nothing installs the removed extras.
    for script in (ROOT / ".ci" / "run", ROOT / "tools" / "test.sh"):
        assert not re.search(r"\[(lint|bench)\]", script.read_text())


def test_readme_links_work_on_the_package_index_page() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    relative = [t for t in targets if not re.match(r"(https?://|#)", t)]
    assert relative == []
    for target in targets:
        if target.startswith(f"{REPOSITORY}/blob/main/") or target.startswith(
            f"{REPOSITORY}/tree/main/"
        ):
            path = target.split("/main/", 1)[1].split("#")[0]
            assert (ROOT / path).exists(), target


def test_version_comes_from_the_package_metadata() -> None:
    assert e2ebackup.__version__ == importlib.metadata.version("e2ebackup")
    assert e2ebackup.__version__ == cargo_workspace()["version"]


def test_sdist_carries_the_license_and_metadata(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "tools" / "build_wheels.sh"), "sdist"],
        env=tool_environment(tmp_path),
        check=True,
        capture_output=True,
        timeout=600,
    )
    (sdist,) = tmp_path.glob("e2ebackup-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        assert f"{top}/LICENSE" in names
        pkg_info = tar.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert f"Project-URL: Source, {REPOSITORY}" in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert "Provides-Extra: lint" not in metadata
    assert "Provides-Extra: bench" not in metadata


def test_build_script_rejects_an_unknown_kind(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "build_wheels.sh"), "windows-arm"],
        env=tool_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "unknown kind 'windows-arm'" in result.stderr


def test_wheel_workflow_builds_every_platform() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "wheels.yml").read_text())
    jobs = workflow["jobs"]
    text = yaml.safe_dump(workflow)
    for needle in ("windows", "macos", "ubuntu", "PyO3/maturin-action", "--strip", "sdist"):
        assert needle in text, needle
    linux = {
        (entry["target"], entry["manylinux"])
        for entry in jobs["linux"]["strategy"]["matrix"]["include"]
    }
    assert linux == {
        (arch, tag) for arch in ("x86_64", "aarch64") for tag in ("2_17", "musllinux_1_2")
    }


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[v](../tests/vectors/c2sp.json)", f"[v]({REPOSITORY}/blob/main/tests/vectors/c2sp.json)"),
        ("[d](../tests/vectors/repo_v1/)", f"[d]({REPOSITORY}/tree/main/tests/vectors/repo_v1/)"),
        ("[t](../tools/x.py#L3)", f"[t]({REPOSITORY}/blob/main/tools/x.py#L3)"),
        ("[same](VAULT.md) [web](https://c2sp.org/)", "[same](VAULT.md) [web](https://c2sp.org/)"),
    ],
)
def test_docs_site_links_outside_docs_point_into_the_repository(
    markdown: str, expected: str
) -> None:
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py"
    )
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.on_page_markdown(markdown) == expected


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_index_points_at_readme_sections_that_exist() -> None:
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    index = (ROOT / "docs" / "index.md").read_text()
    linked = re.findall(re.escape(f"{REPOSITORY}/blob/main/README.md#") + r"([\w-]+)\)", index)
    assert len(linked) >= 10
    assert set(linked) <= anchors, set(linked) - anchors
