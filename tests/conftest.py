"""Shared fixtures. nnU-Net reads its folder variables at import, so they are set here, before any test."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_NNUNET_ROOT = Path(tempfile.mkdtemp(prefix="nnunet-mtl-tests-"))
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(_NNUNET_ROOT / _name)

SMALL_SHAPE = (24, 32, 32)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_NNUNET_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def nnunet_root() -> Path:
    return _NNUNET_ROOT


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory) -> Path:
    """A small phantom (2,2,2 train / 1,1,1 validation / 3 test) shared read-only by tests."""
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom

    out = tmp_path_factory.mktemp("phantom") / "data"
    return generate_phantom(out, PhantomSpec(seed=7, train=(2, 2, 2), validation=(1, 1, 1), test=3, shape=SMALL_SHAPE))


@pytest.fixture
def phantom_copy(small_phantom, tmp_path) -> Path:
    """A private copy of the small phantom that a test may damage."""
    return Path(shutil.copytree(small_phantom, tmp_path / "data"))


def tree_snapshot(root: Path) -> set[str]:
    """All paths under ``root`` (hidden ones included), relative to it."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}
