"""Packaging: the Dockerfile lints clean and copies and runs only what the repository has."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_lints_clean_with_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_existing_paths_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)\s+(\S+)$", line.strip())
        if match:
            for source in match.group(1).split():
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert text.count("FROM ") >= 2  # multi-stage
    entry = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "alembic upgrade head" in entry and "uvicorn app.main:app_factory" in entry


def test_pyproject_declares_the_distribution():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["name"] == "coopsync"
    assert data["project"]["scripts"]["coopsync"] == "app.cli:main"
    assert "test" in data["project"]["optional-dependencies"]


def test_ci_runs_make_test_under_ci_true():
    text = (ROOT / ".ci" / "run").read_text()
    assert "make test" in text and "CI=true" in text


def test_code_passes_ruff():
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff), "check", "app", "adapters", "tests", "bench"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
