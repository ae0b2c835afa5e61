"""torch's implementation flags: accepted everywhere torch accepts them, rejected as torch rejects."""

from __future__ import annotations

import inspect

import pytest
import torch

import functional_optreg as fo

PAIRS = [
    (fo.sgd, torch.optim.SGD),
    (fo.adam, torch.optim.Adam),
    (fo.adamw, torch.optim.AdamW),
    (fo.adagrad, torch.optim.Adagrad),
    (fo.rmsprop, torch.optim.RMSprop),
    (fo.adadelta, torch.optim.Adadelta),
    (fo.adamax, torch.optim.Adamax),
]
FLAGS = ("foreach", "fused", "capturable", "differentiable")
FUSED_PAIRS = [(ours, theirs) for ours, theirs in PAIRS if "fused" in inspect.signature(theirs).parameters]


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=lambda f: getattr(f, "__name__", ""))
def test_same_flags_as_torch(ours, theirs):
    torch_flags = {f for f in FLAGS if f in inspect.signature(theirs).parameters}
    our_flags = {f for f in FLAGS if f in inspect.signature(ours).parameters}
    assert our_flags == torch_flags


@pytest.mark.parametrize("ours, theirs", FUSED_PAIRS, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize(
    "flags",
    [
        dict(fused=True, differentiable=True),
        dict(fused=True, foreach=True),
        dict(fused=True, foreach=True, differentiable=True),
    ],
)
def test_rejected_combinations_match_torch(ours, theirs, flags):
    with pytest.raises(RuntimeError) as their_error:
        theirs([torch.zeros(1, requires_grad=True)], **flags)
    with pytest.raises(RuntimeError) as our_error:
        ours(**flags)
    assert str(our_error.value) == str(their_error.value)
