"""torch's implementation flags: accepted everywhere torch accepts them, rejected as torch rejects.

The flags of each optimizer come from its record (:mod:`functional_optreg.optimizers._records`);
both sides' signatures are checked against it, for all fifteen optimizers.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from functional_optreg.optimizers._records import IMPLEMENTATION_FLAGS, RECORDS

FUSED = [record for record in RECORDS.values() if "fused" in record.flags]


def _flags(function):
    parameters = inspect.signature(function).parameters
    return tuple(flag for flag in IMPLEMENTATION_FLAGS if flag in parameters)


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_same_flags_as_torch(record):
    assert _flags(record.torch_class()) == record.flags
    assert _flags(record.load_factory()) == record.flags


def test_fused_optimizers_are_those_torch_fuses():
    assert sorted(record.torch_name for record in FUSED) == ["Adagrad", "Adam", "AdamW", "SGD"]


@pytest.mark.parametrize("record", FUSED, ids=lambda record: record.torch_name)
@pytest.mark.parametrize(
    "flags",
    [
        dict(fused=True, differentiable=True),
        dict(fused=True, foreach=True),
        dict(fused=True, foreach=True, differentiable=True),
    ],
)
def test_rejected_combinations_match_torch(record, flags):
    with pytest.raises(RuntimeError) as their_error:
        record.torch_class()([torch.zeros(1, requires_grad=True)], **flags)
    with pytest.raises(RuntimeError) as our_error:
        record.load_factory()(**flags)
    assert str(our_error.value) == str(their_error.value)
