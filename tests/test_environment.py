import os

import pytest

from nnunet_mtl.environment import environment_variable

NAME = "NNUNET_MTL_TEST_VARIABLE"


def test_the_variable_is_set_in_the_block_and_restored_after_it_even_on_error(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    with environment_variable(NAME, "0"):
        assert os.environ[NAME] == "0"
    assert NAME not in os.environ

    monkeypatch.setenv(NAME, "12")
    with pytest.raises(RuntimeError), environment_variable(NAME, "0"):
        assert os.environ[NAME] == "0"
        raise RuntimeError
    assert os.environ[NAME] == "12"
