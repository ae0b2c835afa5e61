"""Every optimizer's factory takes torch's constructor arguments: same names, order, kinds, defaults.

One test per optimizer record (:data:`functional_optreg.optimizers._records.RECORDS`): the
factory's parameters are those of ``torch.optim.<Class>.__init__`` after ``self`` and ``params``.
AdamW's ``decoupled_weight_decay`` is a group entry of torch's class, not a constructor argument,
so both sides lack it.
"""

from __future__ import annotations

import inspect

import pytest

from functional_optreg.optimizers._records import RECORDS


def _described(parameters):
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_signature_matches_torch(record):
    ours = inspect.signature(record.load_factory()).parameters.values()
    theirs = list(inspect.signature(record.torch_class().__init__).parameters.values())
    assert [p.name for p in theirs[:2]] == ["self", "params"]
    assert _described(ours) == _described(theirs[2:])


def test_every_torch_optimizer_has_a_record():
    torch = pytest.importorskip("torch")
    classes = {
        name
        for name, value in vars(torch.optim).items()
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and value is not torch.optim.Optimizer
    }
    assert classes == set(RECORDS)
