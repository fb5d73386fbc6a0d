import pytest

from nnunet_mtl.config import TINY, MultitaskConfig, ScheduleConfig


def test_cpu_data_loader_processes_is_checked_and_survives_the_checkpoints_round_trip():
    with pytest.raises(ValueError, match="cpu_data_loader_processes"):
        ScheduleConfig(cpu_data_loader_processes=-1)
    assert MultitaskConfig.from_dict(TINY.to_dict()).schedule.cpu_data_loader_processes == 0
    assert ScheduleConfig().cpu_data_loader_processes is None  # the GPU presets keep nnU-Net's own count
