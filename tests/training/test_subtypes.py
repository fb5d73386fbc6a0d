import json

import pytest
import torch

from nnunet_mtl.training.subtypes import SubtypeMap, UnknownCaseError


def test_subtypes_from_the_first_folder_that_has_them(tmp_path):
    first, second = tmp_path / "preprocessed", tmp_path / "raw"
    first.mkdir()
    second.mkdir()
    (second / "subtypes.json").write_text(json.dumps({"quiz_0_001": 0, "quiz_2_007": "2"}))
    subtypes = SubtypeMap.load(first, second)
    assert subtypes.path == second / "subtypes.json"
    assert torch.equal(subtypes.targets(["quiz_2_007", "quiz_0_001"]), torch.tensor([2, 0]))
    assert json.loads(subtypes.to_json()) == {"quiz_0_001": 0, "quiz_2_007": 2}
    with pytest.raises(UnknownCaseError, match=r"case quiz_1_999 has no subtype in .*raw/subtypes.json"):
        subtypes.targets(["quiz_0_001", "quiz_1_999"])
    with pytest.raises(FileNotFoundError, match="nnunet-mtl prepare"):
        SubtypeMap.load(first)
