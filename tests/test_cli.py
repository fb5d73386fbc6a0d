import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_mtl import __version__
from nnunet_mtl.cli import build_parser, main

SCRIPT = str(Path(sys.executable).with_name("nnunet-mtl"))


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("phantom", "prepare", "evaluate"):
        assert command in out


def test_version():
    result = subprocess.run([sys.executable, "-m", "nnunet_mtl", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["phantom", "out", "--train", "a,b"])
    assert info.value.code == 2


def test_default_nnunet_folders_announced_once(small_phantom, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["NNUNET_MTL_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [SCRIPT, "prepare", str(small_phantom), "--dataset-id", "40"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "not set; using" in line]
    assert len(notices) == 1 and str(tmp_path / "home") in notices[0]
    assert (tmp_path / "home" / "nnUNet_raw" / "Dataset040_PancreasMTL" / "dataset.json").is_file()


def test_debug_shows_traceback(tmp_path):
    result = subprocess.run(
        [SCRIPT, "--debug", "prepare", str(tmp_path / "missing"), "--dataset-id", "41"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "data folder not found" in result.stderr
