"""Refetch the viewer's NiiVue bundle from npm at the version pinned in nnunet_mtl/report/bundle.py.

    python scripts/fetch_niivue.py                  # fetch, check the pinned sha256, write the vendored file
    python scripts/fetch_niivue.py --check          # only check the vendored file against the pin
    python scripts/fetch_niivue.py --update-sha256  # after changing NIIVUE_VERSION: print the new sha256 to pin

Needs npm (``npm pack`` downloads the package tarball); installing nnunet-mtl does not.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from nnunet_mtl.report import bundle

VENDORED = Path(bundle.__file__).parent / bundle.VENDOR / bundle.NIIVUE_FILE


def fetch() -> bytes:
    spec = f"{bundle.NIIVUE_PACKAGE}@{bundle.NIIVUE_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        command = ["npm", "pack", spec, "--silent", "--pack-destination", tmp]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(bundle.NIIVUE_TARBALL_PATH)
            if member is None:
                sys.exit(f"{tarball.name}: no {bundle.NIIVUE_TARBALL_PATH}")
            return member.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the vendored file, fetch nothing")
    parser.add_argument("--update-sha256", action="store_true", help="print the fetched file's sha256, write nothing")
    args = parser.parse_args()
    data = VENDORED.read_bytes() if args.check else fetch()
    digest = hashlib.sha256(data).hexdigest()
    if args.update_sha256:
        print(f'NIIVUE_SHA256 = "{digest}"  # {bundle.NIIVUE_PACKAGE}@{bundle.NIIVUE_VERSION}')
        return 0
    if digest != bundle.NIIVUE_SHA256:
        pinned = bundle.NIIVUE_SHA256
        print(f"{bundle.NIIVUE_TARBALL_PATH}: sha256 {digest} is not the pinned {pinned}", file=sys.stderr)
        return 1
    if not args.check:
        VENDORED.write_bytes(data)
    print(f"{VENDORED}: {bundle.NIIVUE_PACKAGE}@{bundle.NIIVUE_VERSION}, sha256 {digest} (as pinned)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
