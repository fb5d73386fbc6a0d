"""Several ``predict`` parts into one output folder: nnU-Net's split, CSVs whole whichever part finishes last."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_mtl.cli import main
from nnunet_mtl.data.layout import Case
from nnunet_mtl.data.subtype_csv import PROBABILITIES_CSV, RESULTS_CSV, read_probabilities_csv, read_subtype_csv
from nnunet_mtl.inference.predictor import RECORDS_FOLDER, CaseResult, _write_record, rebuild_results
from nnunet_mtl.inference.shards import part_of
from tests.conftest import renamed_images

NUM_CASES = 8
NUM_PARTS = 3
TIMEOUT_S = 300


def test_parts_split_as_nnunet_does():
    cases = list(range(10))
    parts = [part_of(cases, 3, k) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]  # nnU-Net: list_of_lists[part_id::num_parts]
    assert part_of(cases[:2], 3, 2) == []


@pytest.mark.parametrize(
    ("parts", "message"),
    [(["--num-parts", "0"], "--num-parts must be at least 1, got 0"), (["--num-parts", "2", "--part-id", "2"], "0..1")],
)
def test_bad_parts_are_one_line_errors(parts, message, small_phantom, tmp_path, capsys):
    argv = ["predict", "--model-dir", str(tmp_path), "-i", str(small_phantom / "test"), "-o", str(tmp_path / "o")]
    assert main([*argv, *parts]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunet-mtl: error: --") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def _part_finishing(out: str, names: list[str], all_names: list[str], barrier, round_: int) -> None:
    """One part's last moments: its records, then the CSV rebuild, all parts released at once."""
    out_dir = Path(out)
    barrier.wait()
    for name in names:
        (out_dir / f"{name}.nii.gz").write_bytes(b"mask")
        _write_record(out_dir, CaseResult(name, round_ % 3, [0.2, 0.3, 0.5], "whole", 1, {}, "same settings"))
    rebuild_results(out_dir, [Case(n, out_dir / n) for n in all_names], "same settings")


def test_parts_finishing_at_the_same_moment_leave_every_case_once(tmp_path):
    """Four parts release together, write their records and rebuild the CSVs (without the lock, a part that
    read the records before another's last one was written can overwrite the complete CSVs)."""
    names = [f"quiz_{i:03d}" for i in range(24)]
    context = multiprocessing.get_context("fork")
    for round_ in range(12):
        out = tmp_path / f"round{round_}"
        out.mkdir()
        barrier = context.Barrier(4)
        processes = [
            context.Process(target=_part_finishing, args=(str(out), names[k::4], names, barrier, round_))
            for k in range(4)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
        assert sorted(read_subtype_csv(out / RESULTS_CSV)) == names, round_
        assert sorted(read_probabilities_csv(out / PROBABILITIES_CSV)) == names, round_
        assert len((out / RESULTS_CSV).read_text().splitlines()) == len(names) + 1


@pytest.fixture(scope="module")
def images(small_phantom, tmp_path_factory) -> Path:
    return renamed_images(small_phantom, tmp_path_factory.mktemp("shard_inputs"), NUM_CASES, 600)


def start_part(model_dir: Path, images: Path, out: Path, part: int, console: Path) -> subprocess.Popen:
    binary = str(Path(sys.executable).with_name("nnunet-mtl"))
    command = [binary, "predict", "--model-dir", str(model_dir), "-i", str(images), "-o", str(out)]
    command += ["--num-parts", str(NUM_PARTS), "--part-id", str(part)]
    with console.open("w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def status(images: Path, out: Path) -> subprocess.CompletedProcess:
    binary = str(Path(sys.executable).with_name("nnunet-mtl"))
    command = [binary, "predict", "--status", "-i", str(images), "-o", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.slow
def test_concurrent_parts_and_a_rerun_part_fill_one_folder(smoke_model, images, tmp_path):
    model_dir = smoke_model[0]
    names = sorted(p.name.removesuffix("_0000.nii.gz") for p in images.glob("*_0000.nii.gz"))
    local = Path(shutil.copytree(images, tmp_path / "images"))
    broken = local / f"{names[4]}_0000.nii.gz"  # part 1's second case (parts: 0 3 6 / 1 4 7 / 2 5)
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])  # a sound header: part 1 fails when it reaches it
    out = tmp_path / "pred"
    consoles = [tmp_path / f"part{k}.txt" for k in range(NUM_PARTS)]
    parts = [start_part(model_dir, local, out, k, consoles[k]) for k in range(NUM_PARTS)]
    codes = [part.wait(TIMEOUT_S) for part in parts]
    logs = [console.read_text() for console in consoles]
    assert codes == [0, 2, 0], logs
    assert f"{broken}: corrupt or truncated gzip data" in logs[1]
    csv = read_subtype_csv(out / RESULTS_CSV)
    assert sorted(csv) == [n for i, n in enumerate(names) if i not in (4, 7)]  # all but part 1's unfinished
    assert any("2 case(s) still missing" in log or "3 case(s) still missing" in log for log in (logs[0], logs[2]))
    missing = status(local, out)
    assert missing.returncode == 1 and f"6 of {NUM_CASES} cases" in missing.stdout
    assert missing.stdout.count("missing quiz_") == 2

    broken.write_bytes(content)  # the crash's cause repaired: part 1 runs again and does only the rest
    stamp = (out / f"{names[1]}.nii.gz").stat().st_mtime_ns
    rerun = start_part(model_dir, local, out, 1, tmp_path / "rerun.txt")
    assert rerun.wait(TIMEOUT_S) == 0, (tmp_path / "rerun.txt").read_text()
    assert "1 of 3 cases already predicted" in (tmp_path / "rerun.txt").read_text()
    assert (out / f"{names[1]}.nii.gz").stat().st_mtime_ns == stamp
    assert sorted(read_subtype_csv(out / RESULTS_CSV)) == names
    assert sorted(read_probabilities_csv(out / PROBABILITIES_CSV)) == names
    assert len((out / RESULTS_CSV).read_text().splitlines()) == NUM_CASES + 1
    assert sorted(p.name for p in (out / RECORDS_FOLDER).glob("*.json")) == [f"{n}.json" for n in names]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    done = status(local, out)
    assert done.returncode == 0 and f"{NUM_CASES} of {NUM_CASES} cases" in done.stdout, done.stdout
