import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mtl.cli import main
from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.data.layout import Case
from nnunet_mtl.inference.cases import find_input_cases
from nnunet_mtl.inference.model import load_model
from nnunet_mtl.inference.predictor import RECORDS_FOLDER, MultitaskPredictor
from nnunet_mtl.io import Geometry


@pytest.fixture(scope="module")
def model_dir(smoke_model) -> Path:
    return smoke_model[0]


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def odd_geometry_images(small_phantom, tmp_path_factory) -> Path:
    """Phantom test images re-stamped with awkward geometries (the voxels are the phantom's)."""
    folder = tmp_path_factory.mktemp("odd_inputs")
    source = sitk.ReadImage(str(sorted((small_phantom / "test").glob("*_0000.nii.gz"))[0]))
    rotation = sitk.VersorTransform((0.3, -0.2, 1.0), 0.4).GetMatrix()
    variants = {
        "quiz_901": dict(spacing=(0.6, 0.9, 3.3)),  # strongly anisotropic
        "quiz_902": dict(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1), origin=(120.0, -40.0, 310.0)),  # flipped axes
        "quiz_903": dict(crop=(29, 31, 23)),  # odd sizes (x, y, z)
        "quiz_904": dict(direction=rotation, origin=(-3.5, 7.25, 11.0)),  # oblique
    }
    for name, change in variants.items():
        image = source
        if "crop" in change:
            x, y, z = change["crop"]
            image = image[:x, :y, :z]
        image = sitk.Image(image)
        image.SetSpacing(change.get("spacing", image.GetSpacing()))
        image.SetDirection(change.get("direction", image.GetDirection()))
        image.SetOrigin(change.get("origin", image.GetOrigin()))
        sitk.WriteImage(image, str(folder / f"{name}_0000.nii.gz"))
    return folder


def geometry_mismatch(mask: Path, image: Path) -> str | None:
    """NIfTI stores directions as quaternions: an exact copy reads back equal to about 1e-8."""
    return Geometry.of(sitk.ReadImage(str(mask))).mismatch(Geometry.of(sitk.ReadImage(str(image))))


def test_masks_keep_each_inputs_exact_geometry(model_dir, odd_geometry_images, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--model-dir", str(model_dir), "-i", str(odd_geometry_images), "-o", str(out)]) == 0
    for image in sorted(odd_geometry_images.glob("*_0000.nii.gz")):
        mask = out / image.name.replace("_0000.nii.gz", ".nii.gz")
        assert geometry_mismatch(mask, image) is None, mask.name
        assert sitk.ReadImage(str(mask)).GetSize() == sitk.ReadImage(str(image)).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(mask))))) <= {0, 1, 2}


def test_subtype_csv_format_is_exact(model_dir, small_phantom, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--model-dir", str(model_dir), "-i", str(small_phantom / "test"), "-o", str(out)]) == 0
    lines = (out / "subtype_results.csv").read_text().splitlines()
    cases = sorted(p.name.replace("_0000", "") for p in (small_phantom / "test").glob("*_0000.nii.gz"))
    assert lines[0] == "Names,Subtype"
    assert [line.split(",")[0] for line in lines[1:]] == cases
    assert all(re.fullmatch(r"quiz_\d+\.nii\.gz,[012]", line) for line in lines[1:])
    probabilities = (out / "subtype_probabilities.csv").read_text().splitlines()
    assert probabilities[0] == "Names,p0,p1,p2"
    for row, result in zip(probabilities[1:], lines[1:]):
        name, *values = row.split(",")
        assert name == result.split(",")[0]
        assert abs(sum(map(float, values)) - 1) < 1e-4
        assert int(np.argmax([float(v) for v in values])) == int(result.split(",")[1])


def test_split_folder_input_takes_the_images_and_ignores_the_masks(small_phantom):
    cases = find_input_cases(small_phantom / "validation")
    assert len(cases) == 3 and all(c.image.name.endswith("_0000.nii.gz") for c in cases)


def test_volume_over_the_memory_budget_takes_the_sliding_window(model, small_phantom, tmp_path):
    case = find_input_cases(small_phantom / "test")[0]
    small = MultitaskPredictor(model, config=InferenceConfig(memory_budget_gb=1e-6)).predict_case(case, tmp_path / "s")
    large = MultitaskPredictor(model, config=InferenceConfig(memory_budget_gb=64)).predict_case(case, tmp_path / "w")
    assert (small.path, large.path) == ("sliding", "whole")
    assert large.forward_passes == 1


def test_several_members_average_both_outputs(model_dir, small_phantom):
    both = load_model(model_dir, checkpoints=("best", "final"))
    assert both.members == ["fold_0/checkpoint_best.pth", "fold_0/checkpoint_final.pth"]
    predictor = MultitaskPredictor(both)
    pre = predictor.preprocess(find_input_cases(small_phantom / "test")[0])
    averaged = predictor.forward(pre.data)
    singles = []
    for network in both.networks:
        predictor.engine.networks = [network]
        singles.append(predictor.forward(pre.data))
    torch.testing.assert_close(averaged.class_logits, (singles[0].class_logits + singles[1].class_logits) / 2)
    torch.testing.assert_close(
        averaged.segmentation_logits, (singles[0].segmentation_logits + singles[1].segmentation_logits) / 2
    )


def test_tta_runs_eight_passes_for_both_outputs(model, small_phantom, tmp_path):
    case = find_input_cases(small_phantom / "test")[0]
    result = MultitaskPredictor(model, tta=True, config=InferenceConfig(memory_budget_gb=64)).predict_case(
        case, tmp_path
    )
    assert result.forward_passes == 8


def test_rerun_skips_finished_cases_and_redoes_missing_ones(model, small_phantom, tmp_path):
    out = tmp_path / "pred"
    cases = find_input_cases(small_phantom / "test")
    predictor = MultitaskPredictor(model)
    predictor.predict_folder(cases, out)
    first, second = (out / f"{c.name}.nii.gz" for c in cases[:2])
    stamp = first.stat().st_mtime_ns
    second.unlink()  # as if the run had been killed before this case was written
    predictor.predict_folder(cases, out)
    assert first.stat().st_mtime_ns == stamp
    assert second.is_file()
    assert len((out / "subtype_results.csv").read_text().splitlines()) == len(cases) + 1
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    predictor.predict_folder(cases, out, overwrite=True)
    assert first.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in (out / RECORDS_FOLDER).glob("*.json")) == sorted(f"{c.name}.json" for c in cases)


def test_checkpoint_with_pickled_code_is_refused(model_dir, tmp_path):
    import argparse
    import shutil

    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    checkpoint = folder / "fold_0" / "checkpoint_best.pth"
    state = torch.load(checkpoint, weights_only=True)
    state["extra"] = argparse.Namespace(payload="not a tensor")
    torch.save(state, checkpoint)
    with pytest.raises(Exception, match="cannot be loaded"):
        load_model(folder)


def test_case_records_round_trip(model, small_phantom, tmp_path):
    from nnunet_mtl.inference.predictor import finished_cases

    cases = find_input_cases(small_phantom / "test")[:1]
    results = MultitaskPredictor(model).predict_folder(cases, tmp_path)
    restored = finished_cases(tmp_path, [*cases, Case("quiz_missing", tmp_path / "x_0000.nii.gz")])
    assert list(restored) == [cases[0].name]
    assert restored[cases[0].name].probabilities == results[0].probabilities


def test_whole_volume_and_sliding_window_paths_agree(model, small_phantom):
    """A volume within the patch: one pass of the padded volume is stock's single tile, to float precision.
    (Volumes bigger than the patch differ by context and normalisation statistics; the benchmark reports
    how much, as Dice of (c) against (a).)"""
    whole, sliding = MultitaskPredictor(model, path="whole"), MultitaskPredictor(model, path="sliding")
    patch = model.configuration_manager.patch_size
    compared = 0
    for case in find_input_cases(small_phantom / "test"):
        pre = whole.preprocess(case)
        outputs = [p.forward(pre.data) for p in (whole, sliding)]
        assert outputs[0].segmentation_logits.shape == outputs[1].segmentation_logits.shape
        if all(s <= p for s, p in zip(pre.data.shape[1:], patch)):
            compared += 1
            torch.testing.assert_close(outputs[0].segmentation_logits, outputs[1].segmentation_logits)
            torch.testing.assert_close(outputs[0].class_logits, outputs[1].class_logits)
            masks = [whole.segmentation_of(o, pre.properties) for o in outputs]
            assert np.array_equal(*masks)
    assert compared >= 1


def test_reading_equals_nnunets_own_reader_and_preprocessing(model, odd_geometry_images):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    predictor = MultitaskPredictor(model)
    for case in find_input_cases(odd_geometry_images):
        ours = predictor.preprocess(case)
        data, _, properties = predictor.preprocessor.run_case(
            [str(case.image)], None, model.plans_manager, model.configuration_manager, model.dataset_json
        )
        assert model.plans_manager.image_reader_writer_class is SimpleITKIO
        np.testing.assert_array_equal(ours.data.numpy(), data)
        assert ours.properties.keys() == properties.keys()
        for key, value in properties.items():
            np.testing.assert_array_equal(
                np.asarray(ours.properties[key], dtype=object), np.asarray(value, dtype=object)
            )


def test_bad_case_stops_the_run_cleanly_and_a_rerun_finishes(model_dir, small_phantom, tmp_path, capsys):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(small_phantom / "test", images)
    bad = images / "quiz_999_0000.nii.gz"  # sorted last: the good cases are done first
    content = sorted(images.glob("*_0000.nii.gz"))[0].read_bytes()
    bad.write_bytes(content[: len(content) // 2])  # a sound header: the damage shows only when it is read
    out = tmp_path / "pred"
    args = ["predict", "--model-dir", str(model_dir), "-i", str(images), "-o", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"nnunet-mtl: error: {bad}: corrupt or truncated gzip data"
    good = sorted(p.name.replace("_0000", "") for p in images.glob("quiz_0*_0000.nii.gz"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == good  # complete masks only
    assert not (out / "subtype_results.csv").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    stamps = {name: (out / name).stat().st_mtime_ns for name in good}
    bad.unlink()
    assert main(args) == 0
    assert {name: (out / name).stat().st_mtime_ns for name in good} == stamps
    assert len((out / "subtype_results.csv").read_text().splitlines()) == len(good) + 1


def test_rerun_with_other_settings_predicts_again(model, small_phantom, tmp_path):
    cases = find_input_cases(small_phantom / "test")[:2]
    plain = MultitaskPredictor(model).predict_folder(cases, tmp_path)
    with_tta = MultitaskPredictor(model, tta=True).predict_folder(cases, tmp_path)
    assert [r.forward_passes for r in plain] == [1, 1] and [r.forward_passes for r in with_tta] == [8, 8]


def test_predict_applies_the_model_folders_postprocessing(model_dir, small_phantom, tmp_path):
    from nnunet_mtl.data.subtype_csv import read_probabilities_csv, read_subtype_csv
    from nnunet_mtl.postprocessing.components import apply_step
    from nnunet_mtl.postprocessing.plan import Postprocessing, write_postprocessing

    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    write_postprocessing(folder, Postprocessing(2.0, ("keep_largest_gland", "keep_largest_lesion")))
    images = small_phantom / "test"
    raw, post = tmp_path / "raw", tmp_path / "post"
    assert main(["predict", "--model-dir", str(folder), "-i", str(images), "-o", str(raw), "--no-postprocessing"]) == 0
    assert main(["predict", "--model-dir", str(folder), "-i", str(images), "-o", str(post)]) == 0

    network = read_probabilities_csv(raw / "subtype_probabilities.csv")
    assert not (raw / "subtype_probabilities_uncalibrated.csv").exists()
    assert read_probabilities_csv(post / "subtype_probabilities_uncalibrated.csv") == network
    calibrated = read_probabilities_csv(post / "subtype_probabilities.csv")
    rounding = 5e-7  # the CSV keeps 6 decimals
    for name, p in network.items():
        # softmax(log p / 2) = sqrt(p) / sum(sqrt(p)), with each p known to within the CSV's rounding (a
        # confident readout's probability can round to 0): each calibrated probability lies between its
        # bounds over that box, and is itself rounded in the CSV
        low, high = np.sqrt(np.clip(np.asarray(p) - rounding, 0, None)), np.sqrt(np.asarray(p) + rounding)
        lower = low / (low + high.sum() - high)
        upper = high / (high + low.sum() - low)
        value = np.asarray(calibrated[name])
        assert np.all((lower - rounding <= value) & (value <= upper + rounding)), name
    assert read_subtype_csv(post / "subtype_results.csv") == read_subtype_csv(raw / "subtype_results.csv")
    for mask in raw.glob("*.nii.gz"):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        expected = apply_step(apply_step(labels, "keep_largest_gland"), "keep_largest_lesion")
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(post / mask.name))), expected)


def test_the_lesion_threshold_moves_the_lesion_inside_nnunets_gland(model, odd_geometry_images):
    """With a threshold, the mask comes from nnU-Net's exported probabilities: the gland is the mask nnU-Net's
    own export gives, the lesion inside it is where the exported lesion probability is over the threshold;
    also where the export resamples (the anisotropic case) and undoes the crop."""
    from dataclasses import replace

    from nnunet_mtl.inference.cases import segmentation_in_input_geometry
    from nnunet_mtl.postprocessing.plan import Postprocessing

    threshold = 0.2
    predictor = MultitaskPredictor(replace(model, postprocessing=Postprocessing(lesion_threshold=threshold)))
    added = 0
    for case in find_input_cases(odd_geometry_images)[:2]:  # quiz_901 is resampled, quiz_902 flipped
        pre = predictor.preprocess(case)
        prediction = predictor.forward(pre.data)
        nnunet_labels, (_, lesion) = segmentation_in_input_geometry(
            prediction.segmentation_logits,
            model.plans_manager,
            model.configuration_manager,
            model.label_manager,
            pre.properties,
            1,
            return_probabilities=True,
        )
        labels = predictor.segmentation_of(prediction, pre.properties)
        gland = nnunet_labels > 0
        assert labels.shape == nnunet_labels.shape and np.array_equal(labels > 0, gland)
        assert np.array_equal(labels == 2, gland & (lesion > threshold))
        assert MultitaskPredictor(model, postprocess=False).segmentation_of(prediction, pre.properties).tolist() == (
            nnunet_labels.tolist()
        )
        added += int((labels == 2).sum() - (nnunet_labels == 2).sum())
    assert added > 0  # the threshold made a difference somewhere
