"""The viewer's JavaScript: NiiVue's single-file UMD bundle, vendored from npm at a pinned version."""

from __future__ import annotations

import hashlib
from importlib import resources

from nnunet_mtl.errors import InputError

NIIVUE_PACKAGE = "@niivue/niivue"
NIIVUE_VERSION = "0.69.0"
NIIVUE_TARBALL_PATH = "package/dist/niivue.umd.js"  # inside the npm tarball
NIIVUE_SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"
NIIVUE_LICENSE = "BSD-2-Clause"
VENDOR = "vendor"
NIIVUE_FILE = "niivue.umd.js"
VIEWER_SCRIPT = "viewer.js"  # ours: the controls around NiiVue


def niivue_bundle() -> bytes:
    """The vendored bundle, checked against its pinned sha256 (a damaged install would show a blank viewer)."""
    path = resources.files(__package__).joinpath(VENDOR, NIIVUE_FILE)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != NIIVUE_SHA256:
        raise InputError(
            str(path),
            f"sha256 {digest} is not the pinned one of {NIIVUE_PACKAGE}@{NIIVUE_VERSION} "
            "(a damaged install: reinstall nnunet-mtl, or refetch it with scripts/fetch_niivue.py)",
        )
    return data


def viewer_script() -> str:
    return resources.files(__package__).joinpath(VIEWER_SCRIPT).read_text(encoding="utf-8")
