"""The report's case viewer: each embedded case's CT and masks as gzip NIfTI (base64), within a size budget.

The CT is stored as uint8 over ``VIEWER.ct_range_hu`` (the browser maps it back to HU), the masks as uint8
labels; all three keep the image's geometry, so NiiVue overlays them exactly. Which cases are embedded:
the worst and the best (by the per-case table's mean Dice), then the next worst and next best by turns
while the next one fits in ``VIEWER.budget_mb``.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mtl.config import VIEWER, ViewerConfig
from nnunet_mtl.data.labels import LESION, round_labels
from nnunet_mtl.errors import InputError
from nnunet_mtl.io import Geometry, array_of, read_volume
from nnunet_mtl.report.bundle import NIIVUE_LICENSE, NIIVUE_PACKAGE, NIIVUE_VERSION, niivue_bundle, viewer_script
from nnunet_mtl.report.figures import CONTOURS, WINDOW_LEVEL, WINDOW_WIDTH, lesion_slice
from nnunet_mtl.report.sources import CaseFiles, ReportSources

MB = 1e6
# (pancreas, lesion) colours: truth as in the overlay figures, prediction in a second pair
TRUTH_COLOURS = tuple(colour for _, colour, _ in CONTOURS)
PREDICTION_COLOURS = ("#0074d9", "#ffdc00")


@dataclass
class EncodedCase:
    name: str
    volumes: dict[str, str | None]  # ct, truth, prediction: base64 of a .nii.gz
    shape: tuple[int, int, int]  # (z, y, x) as embedded
    stride: int  # in-plane subsampling (1: full size)
    focus_mm: tuple[float, float, float]  # RAS mm of the lesion's (else the gland's) largest axial slice

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.volumes.values() if v is not None)


@dataclass
class ViewerContent:
    cases: list[tuple[dict, EncodedCase]]  # embedded, in embedding priority
    left_out: list[str]  # viewable but over the budget
    missing: list[str]  # without their image or prediction
    budget_mb: float

    def notes(self) -> list[str]:
        names = [case["name"] for case, _ in self.cases]
        size = sum(encoded.size for _, encoded in self.cases) / MB
        sizes = f"{size:.1f} MB of volumes; budget {self.budget_mb:g} MB"
        if self.left_out or self.missing:
            notes = [f"{len(names)} case(s) embedded ({sizes}): " + ", ".join(names)]
        else:
            notes = [f"all {len(names)} cases embedded ({sizes})"]
        if self.left_out:
            notes.append(f"left out to keep the report within the budget: {', '.join(self.left_out)}")
        if self.missing:
            notes.append(f"no image or prediction at hand (give --images DIR): {', '.join(self.missing)}")
        strided = [f"{case['name']} (every {e.stride}th row and column)" for case, e in self.cases if e.stride > 1]
        if strided:
            notes.append("downsampled in-plane: " + ", ".join(strided))
        return notes


def _nifti_base64(image: sitk.Image) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nii"
        sitk.WriteImage(image, str(path))
        return base64.b64encode(gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def _uint8_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    image.CopyInformation(reference)
    return image


def _read_mask(path: Path, image: sitk.Image, stride: int) -> np.ndarray:
    mask = read_volume(path)
    mismatch = Geometry.of(mask).mismatch(Geometry.of(image))
    if mismatch:
        raise InputError(path, f"mask does not match its image: {mismatch}")
    return round_labels(array_of(mask[::stride, ::stride, :]), path)


def encode_case(name: str, files: CaseFiles, config: ViewerConfig = VIEWER) -> EncodedCase:
    full = read_volume(files.image)
    size = full.GetNumberOfPixels()
    stride = 1
    while size / stride**2 > config.max_voxels_per_case:
        stride += 1
    image = full[::stride, ::stride, :]
    low, high = config.ct_range_hu
    ct = np.clip((array_of(image).astype(np.float32) - low) * (255.0 / (high - low)), 0, 255)
    prediction = _read_mask(files.prediction, full, stride)
    truth = None if files.truth is None else _read_mask(files.truth, full, stride)

    reference = truth if truth is not None else prediction
    z = lesion_slice(reference, prediction)
    in_slice = np.argwhere(reference[z] == LESION)
    if not len(in_slice):
        in_slice = np.argwhere(reference[z] > 0)
    y, x = in_slice.mean(axis=0) if len(in_slice) else (image.GetHeight() / 2, image.GetWidth() / 2)
    lps = image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
    volumes = {
        "ct": _nifti_base64(_uint8_like(np.rint(ct), image)),
        "truth": None if truth is None else _nifti_base64(_uint8_like(truth, image)),
        "prediction": _nifti_base64(_uint8_like(prediction, image)),
    }
    return EncodedCase(name, volumes, tuple(array_of(image).shape), stride, (-lps[0], -lps[1], lps[2]))


def embedding_priority(ranked: list[dict]) -> list[dict]:
    """Worst, best, second worst, second best, ... of cases ranked best first."""
    order, low, high = [], len(ranked) - 1, 0
    while low >= high:
        order.append(ranked[low])
        if high < low:
            order.append(ranked[high])
        low, high = low - 1, high + 1
    return order


def select_cases(ranked: list[dict], files: dict[str, CaseFiles], config: ViewerConfig = VIEWER) -> ViewerContent:
    viewable = [c for c in ranked if files[c["name"]].image is not None and files[c["name"]].prediction is not None]
    missing = [c["name"] for c in ranked if c not in viewable]
    budget = config.budget_mb * MB
    chosen, used, left_out = [], 0, []
    for position, case in enumerate(embedding_priority(viewable)):
        if left_out:
            left_out.append(case["name"])
            continue
        encoded = encode_case(case["name"], files[case["name"]], config)
        if position >= 2 and used + encoded.size > budget:
            left_out.append(case["name"])
            continue
        chosen.append((case, encoded))
        used += encoded.size
    return ViewerContent(chosen, left_out, missing, config.budget_mb)


def _json_script(payload: dict, **attributes: str) -> str:
    text = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    attrs = "".join(f' {k.rstrip("_").replace("_", "-")}="{html.escape(v)}"' for k, v in attributes.items())
    return f'<script type="application/json"{attrs}>{text}</script>'


def _case_payload(case: dict, encoded: EncodedCase, probabilities: list[float] | None, rank: int) -> dict:
    return {
        "name": case["name"],
        "rank": rank,
        "dice_whole": case.get("dice_whole_pancreas"),
        "dice_lesion": case.get("dice_lesion"),
        "subtype_true": case.get("subtype_true"),
        "subtype_pred": case.get("subtype_pred"),
        "probabilities": probabilities,
        "shape": list(encoded.shape),
        "stride": encoded.stride,
        "focus_mm": list(encoded.focus_mm),
        **encoded.volumes,
    }


STYLE = """
tr.viewable{cursor:pointer}tr.viewable:hover td{background:#eef4fb}tr.viewing td{background:#dbe9f8}
tr.not-embedded td:first-child{color:#888}
.viewer{display:flex;gap:1rem;flex-wrap:wrap;outline:none}.viewer:focus-visible{outline:2px solid #9bd}
.viewer-main{flex:1 1 620px;min-width:320px}
.viewer-canvas{height:480px;background:#000}.viewer-canvas canvas{width:100%;height:100%;display:block}
.viewer-side{flex:0 1 360px;font-size:.9rem}.viewer-row{margin:.3rem 0}
.viewer-row input[type=range]{width:70%;vertical-align:middle}
.viewer-side select{max-width:210px}.viewer-side fieldset{margin:.5rem 0;border:1px solid #ddd}
.viewer-side input[type=number]{width:4.5rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin:0 .2rem 0 .5rem;vertical-align:middle;
border:1px solid #999}
.viewer-bar{position:relative;z-index:0;margin:.15rem 0;padding:.05rem .3rem;border:1px solid #ddd}
.viewer-bar span:last-child{position:absolute;left:0;top:0;bottom:0;background:#cfe0f3;z-index:-1}
.viewer-bar.predicted{font-weight:600}.viewer-overlays td{border:none;padding:.1rem .2rem;white-space:nowrap}
"""

CONTROLS = """
<div id="viewer" class="viewer" tabindex="0" data-state="loading">
<div class="viewer-main">
<div class="viewer-canvas"><canvas id="viewer-canvas"></canvas></div>
<div class="viewer-row"><label for="viewer-slice">axial slice</label>
<input type="range" id="viewer-slice" min="0" max="0" value="0" step="1"><span id="viewer-slice-label"></span></div>
<div class="viewer-row note" id="viewer-location"></div>
</div>
<div class="viewer-side">
<div class="viewer-row"><button type="button" id="viewer-prev" title="previous case (p)">&#9664;</button>
<select id="viewer-select" aria-label="case"></select>
<button type="button" id="viewer-next" title="next case (n)">&#9654;</button></div>
<table class="viewer-facts"><tbody id="viewer-facts"></tbody></table>
<div id="viewer-probabilities"></div>
<fieldset><legend>overlays</legend>
<table class="viewer-overlays"><tbody>
<tr><td><label><input type="checkbox" id="viewer-truth" checked> truth</label></td>
<td><span class="swatch" style="background:{truth_pancreas}"></span>pancreas
<span class="swatch" style="background:{truth_lesion}"></span>lesion</td>
<td><label><input type="checkbox" id="viewer-truth-outline" checked> outline</label></td></tr>
<tr><td><label><input type="checkbox" id="viewer-prediction" checked> prediction</label></td>
<td><span class="swatch" style="background:{pred_pancreas}"></span>pancreas
<span class="swatch" style="background:{pred_lesion}"></span>lesion</td>
<td><label><input type="checkbox" id="viewer-prediction-outline"> outline</label></td></tr>
</tbody></table>
<label for="viewer-opacity">opacity</label> <input type="range" id="viewer-opacity" min="0" max="100" value="50">
</fieldset>
<fieldset><legend>view</legend>
<select id="viewer-layout" aria-label="planes">
<option value="planes">axial, coronal, sagittal</option><option value="0">axial</option>
<option value="1">coronal</option><option value="2">sagittal</option></select><br>
window L <input type="number" id="viewer-level" value="{level:g}" step="10">
W <input type="number" id="viewer-width" value="{width:g}" min="1" step="10">
</fieldset>
<p class="note">Wheel, &uarr;/&darr; (PageUp/PageDown: 10) or the slider: axial slice; click: move the cross;
right drag: window; n/p: next/previous case; click a row of the per-case table to open that case.</p>
</div>
</div>
<p class="note" id="viewer-status">loading the viewer&hellip; (it needs JavaScript and WebGL2)</p>
"""


def viewer_html(content: ViewerContent, sources: ReportSources, ranked: list[dict]) -> str:
    """The viewer's controls, its data (one JSON script per case, parsed when opened) and its scripts."""
    if not content.cases:
        return ""
    ranks = {case["name"]: position + 1 for position, case in enumerate(ranked)}
    embedded = {case["name"] for case, _ in content.cases}
    config = {
        "order": [c["name"] for c in ranked if c["name"] in embedded],  # the per-case table's order
        "first": content.cases[0][0]["name"],  # the worst case opens first
        "num_cases": len(ranked),
        "ct_range_hu": list(VIEWER.ct_range_hu),
        "window": [WINDOW_LEVEL, WINDOW_WIDTH],
        "truth_colours": list(TRUTH_COLOURS),
        "prediction_colours": list(PREDICTION_COLOURS),
        "niivue": f"{NIIVUE_PACKAGE}@{NIIVUE_VERSION} ({NIIVUE_LICENSE})",
    }
    parts = [
        f"<style>{STYLE}</style>",
        CONTROLS.format(
            truth_pancreas=TRUTH_COLOURS[0],
            truth_lesion=TRUTH_COLOURS[1],
            pred_pancreas=PREDICTION_COLOURS[0],
            pred_lesion=PREDICTION_COLOURS[1],
            level=WINDOW_LEVEL,
            width=WINDOW_WIDTH,
        ),
        _json_script(config, id="viewer-config"),
    ]
    for case, encoded in content.cases:
        payload = _case_payload(case, encoded, sources.probabilities.get(case["name"]), ranks[case["name"]])
        parts.append(_json_script(payload, class_="viewer-case", data_case=case["name"]))
    bundle = base64.b64encode(gzip.compress(niivue_bundle(), compresslevel=9, mtime=0)).decode("ascii")
    parts.append(f'<script type="application/octet-stream" id="niivue-bundle">{bundle}</script>')  # gzip, base64
    parts.append(f"<script>{viewer_script()}</script>")
    return "\n".join(parts)
