"""`check_choice`: one error naming the bad value, the valid ones and the closest."""

import pytest

from alignlab.core.errors import AlignlabError, check_choice


def test_check_choice():
    assert check_choice("mode", "argmax", ("softmax", "argmax")) == "argmax"
    assert check_choice("control", None, (None, "random")) is None
    with pytest.raises(
        AlignlabError,
        match=r"unknown mode 'sofmax'; valid: softmax, argmax\. Did you mean: softmax",
    ):
        check_choice("mode", "sofmax", ("softmax", "argmax"))
    with pytest.raises(AlignlabError, match=r"valid: None, random\.$"):
        check_choice("control", "x", (None, "random"))
