"""``nnunet-mtl predict`` on a volume of the real data's largest size, with the default memory budget.

Writes one phantom CT of 244 x 272 x 459 voxels (z, y, x) at 0.8 x 0.73 x 0.73 mm (the largest case of
the real data), runs ``nnunet-mtl predict`` on it in a child process, and reports the wall time, the
child's peak resident memory, the path the predictor took and whether the mask kept the geometry.

    python benchmarks/large_volume.py --model-dir MODEL_DIR [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (244, 272, 459)  # z, y, x
SPACING_XYZ = (0.73, 0.73, 0.8)


def write_large_case(folder: Path, seed: int = 0) -> Path:
    from nnunet_mtl.data.phantom import synthesize_case

    case = synthesize_case(np.random.default_rng(seed), SHAPE, subtype=1)
    image = np.full(SHAPE, -100, dtype=np.int16)  # the phantom's size is jittered: crop or pad to SHAPE
    common = tuple(slice(0, min(a, b)) for a, b in zip(SHAPE, case.image.shape))
    image[common] = case.image[common]
    volume = sitk.GetImageFromArray(image)
    volume.SetSpacing(SPACING_XYZ)
    volume.SetOrigin((-160.0, -170.0, -90.0))
    path = folder / "quiz_900_0000.nii.gz"
    sitk.WriteImage(volume, str(path), useCompression=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    parser.add_argument("extra", nargs="*", help="more arguments for nnunet-mtl predict (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nnunet-mtl-large-") as tmp:
        images, out = Path(tmp) / "images", Path(tmp) / "pred"
        images.mkdir()
        image_path = write_large_case(images)
        command = [
            sys.executable,
            "-m",
            "nnunet_mtl",
            "predict",
            "--model-dir",
            str(args.model_dir),
            "-i",
            str(images),
            "-o",
            str(out),
            *args.extra,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        record = json.loads((out / ".nnunet-mtl" / "quiz_900.json").read_text())
        image, mask = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(out / "quiz_900.nii.gz"))
        same = all(
            getattr(image, g)() == getattr(mask, g)() for g in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")
        )
    result = {
        "shape_zyx": list(SHAPE),
        "spacing_xyz_mm": list(SPACING_XYZ),
        "model_dir": str(args.model_dir),
        "extra_arguments": args.extra,
        "wall_seconds": seconds,
        "peak_rss_mib": peak_mib,
        "path": record["path"],
        "forward_passes": record["forward_passes"],
        "stage_seconds": record["seconds"],
        "geometry_kept": same,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_volume_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
