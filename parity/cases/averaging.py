"""torch.optim.swa_utils: AveragedModel (SWA, EMA, use_buffers) and SWALR against fo's averagers.

The averaged parameters are compared at every step by making them part of the compared tree:
the case's parameters are ``{"average": ..., "model": ...}``. On the torch side the optimizer
steps the model tensors, then ``AveragedModel.update_parameters(model)`` runs and its averaged
tensors are copied into the "average" tensors. On our side a small adapter transform steps the
model with the optimizer, runs ``averager.update`` and moves the "average" leaves onto the
averaged values (``old + (new − old)``, within one rounding of ``new``).
"""

import jax
import jax.numpy as jnp
import optax
import torch
from torch.optim import swa_utils

import functional_optreg as fo
from parity.case import Case, default_params
from parity.schedules_for_cases import exponential_lr

_MODEL_NAMES = [
    jax.tree_util.keystr(path, simple=True, separator="/")
    for path, _ in jax.tree_util.tree_flatten_with_path(default_params())[0]
]


def _params():
    return {"average": default_params(), "model": default_params()}


def _split(model, buffer_keys):
    params = {key: value for key, value in model.items() if key not in buffer_keys}
    buffers = {key: value for key, value in model.items() if key in buffer_keys} if buffer_keys else None
    return params, buffers


def _merge(params, buffers):
    return {**params, **(buffers or {})}


def _ours(averager, buffer_keys=(), start=0):
    """Optimizer on "model"; after each update, average the new model once ``count > start``."""

    def build(optimizer, **kwargs):
        tx = optimizer(**kwargs)

        def init_fn(params):
            model_params, buffers = _split(params["model"], buffer_keys)
            return tx.init(params["model"]), averager.init(model_params, buffers), jnp.zeros([], jnp.int32)

        def update_fn(grads, state, params):
            opt_state, avg_state, count = state
            model_updates, opt_state = tx.update(grads["model"], opt_state, params["model"])
            new_model = optax.apply_updates(params["model"], model_updates)
            count = count + 1
            model_params, buffers = _split(new_model, buffer_keys)
            averaged = averager.update(model_params, avg_state, buffers)
            avg_state = jax.tree.map(lambda new, old: jnp.where(count > start, new, old), averaged, avg_state)
            target = _merge(avg_state.params, avg_state.buffers)
            average_updates = jax.tree.map(lambda new, old: new - old, target, params["average"])
            return {"average": average_updates, "model": model_updates}, (opt_state, avg_state, count)

        return optax.GradientTransformation(init_fn, update_fn)

    return build


class _StepThenAverage:
    """Torch: ``optimizer.step()``, then (after ``start`` steps) ``update_parameters`` and the
    SWA scheduler, else the regular scheduler; the averaged tensors are exposed for comparison."""

    def __init__(self, tensors, optimizer_class, averaged_kwargs, buffer_keys, start, schedulers, kwargs):
        count = len(_MODEL_NAMES)
        average_tensors, model_tensors = tensors[:count], tensors[count:]
        self.module = torch.nn.Module()
        for name, tensor in zip(_MODEL_NAMES, model_tensors):
            attribute = name.replace("/", "_")
            if name.split("/")[0] in buffer_keys:
                self.module.register_buffer(attribute, tensor)
            else:
                self.module.register_parameter(attribute, torch.nn.Parameter(tensor))
        self.average_tensors = dict(zip((name.replace("/", "_") for name in _MODEL_NAMES), average_tensors))
        self.optimizer = optimizer_class(model_tensors, **kwargs)
        self.averaged = swa_utils.AveragedModel(self.module, **averaged_kwargs)
        self.start = start
        self.scheduler, self.swa_scheduler = (build(self.optimizer) if build else None for build in schedulers)
        self.steps = 0

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.optimizer.step()
        self.steps += 1
        if self.steps > self.start:
            self.averaged.update_parameters(self.module)
            if self.swa_scheduler is not None:
                self.swa_scheduler.step()
        elif self.scheduler is not None:
            self.scheduler.step()
        averaged = dict(self.averaged.module.named_parameters()) | dict(self.averaged.module.named_buffers())
        with torch.no_grad():
            for name, tensor in self.average_tensors.items():
                tensor.copy_(averaged[name])


def _torch(optimizer_class, buffer_keys=(), start=0, scheduler=None, swa_scheduler=None, **averaged_kwargs):
    def build(tensors, **kwargs):
        return _StepThenAverage(
            tensors, optimizer_class, averaged_kwargs, buffer_keys, start, (scheduler, swa_scheduler), kwargs
        )

    return build


def _case(name, ours, torch_side, optimizer, optimizer_class, kwargs, **case_kwargs):
    return Case(
        f"averaging/{name}",
        ours,
        torch_side(optimizer_class),
        kwargs,
        ours_kwargs=dict(optimizer=optimizer, **case_kwargs.pop("ours_kwargs", {})),
        params=_params,
        property_tests=False,
        **case_kwargs,
    )


SGD, ADAM = torch.optim.SGD, torch.optim.Adam
BUFFERS = ("scale", "dense")
SWA_START, SWA_LR, ANNEAL = 25, 0.01, 10
_exp_lr, _torch_exp = exponential_lr(0.05, 0.97)
_swa_phase = fo.swalr(lr=0.05 * 0.97**SWA_START, swa_lr=SWA_LR, anneal_epochs=ANNEAL)
_recipe_lr = optax.join_schedules([_exp_lr, _swa_phase], [SWA_START])


def _swalr(**kwargs):
    return lambda optimizer: swa_utils.SWALR(optimizer, **kwargs)


CASES = [
    _case("swa+sgd_momentum", _ours(fo.swa()), lambda c: _torch(c), fo.sgd, SGD, dict(lr=0.05, momentum=0.9)),
    _case(
        "swa_from_step_20+adam",
        _ours(fo.swa(), start=20),
        lambda c: _torch(c, start=20),
        fo.adam,
        ADAM,
        dict(lr=0.02),
    ),
    _case(
        "ema_multi_avg_fn_0.9+sgd",
        _ours(fo.ema(0.9)),
        lambda c: _torch(c, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9)),
        fo.sgd,
        SGD,
        dict(lr=0.05, momentum=0.9),
    ),
    _case(
        "ema_multi_avg_fn_0.3_lerp_high_branch+adam",
        _ours(fo.ema(0.3)),
        lambda c: _torch(c, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.3)),
        fo.adam,
        ADAM,
        dict(lr=0.02),
    ),
    _case(
        "ema_avg_fn_0.95+sgd",
        _ours(fo.ema(0.95, lerp=False)),
        lambda c: _torch(c, avg_fn=swa_utils.get_ema_avg_fn(0.95)),
        fo.sgd,
        SGD,
        dict(lr=0.05, momentum=0.9),
    ),
    _case(
        "ema_default_decay_from_step_10+adamw",
        _ours(fo.ema(), start=10),
        lambda c: _torch(c, start=10, multi_avg_fn=swa_utils.get_ema_multi_avg_fn()),
        fo.adamw,
        torch.optim.AdamW,
        dict(lr=0.02, weight_decay=0.1),
    ),
    _case(
        "swa_use_buffers",
        _ours(fo.swa(use_buffers=True), buffer_keys=BUFFERS),
        lambda c: _torch(c, buffer_keys=BUFFERS, use_buffers=True),
        fo.sgd,
        SGD,
        dict(lr=0.05, momentum=0.9),
    ),
    _case(
        "swa_buffers_copied_without_use_buffers",
        _ours(fo.swa(), buffer_keys=BUFFERS, start=5),
        lambda c: _torch(c, buffer_keys=BUFFERS, start=5),
        fo.sgd,
        SGD,
        dict(lr=0.05, momentum=0.9),
    ),
    _case(
        "ema_use_buffers",
        _ours(fo.ema(0.8, use_buffers=True), buffer_keys=BUFFERS),
        lambda c: _torch(c, buffer_keys=BUFFERS, use_buffers=True, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.8)),
        fo.adam,
        ADAM,
        dict(lr=0.02),
    ),
    _case(
        "swalr_cos+sgd",
        _ours(fo.swa()),
        lambda c: _torch(c, swa_scheduler=_swalr(swa_lr=0.01, anneal_epochs=20)),
        fo.sgd,
        SGD,
        dict(momentum=0.9),
        ours_kwargs=dict(lr=fo.swalr(lr=0.1, swa_lr=0.01, anneal_epochs=20)),
        torch_kwargs=dict(lr=0.1),
    ),
    _case(
        "swalr_linear+adam",
        _ours(fo.ema(0.9)),
        lambda c: _torch(
            c,
            multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9),
            swa_scheduler=_swalr(swa_lr=0.002, anneal_epochs=15, anneal_strategy="linear"),
        ),
        fo.adam,
        ADAM,
        {},
        ours_kwargs=dict(lr=fo.swalr(lr=0.03, swa_lr=0.002, anneal_epochs=15, anneal_strategy="linear")),
        torch_kwargs=dict(lr=0.03),
    ),
    _case(
        "swalr_zero_anneal_epochs+sgd",
        _ours(fo.swa()),
        lambda c: _torch(c, swa_scheduler=_swalr(swa_lr=0.01, anneal_epochs=0)),
        fo.sgd,
        SGD,
        dict(momentum=0.5),
        ours_kwargs=dict(lr=fo.swalr(lr=0.1, swa_lr=0.01, anneal_epochs=0)),
        torch_kwargs=dict(lr=0.1),
    ),
    _case(
        "swa_recipe_exponential_then_swalr_from_step_25",
        _ours(fo.swa(), start=SWA_START),
        lambda c: _torch(
            c, start=SWA_START, scheduler=_torch_exp, swa_scheduler=_swalr(swa_lr=SWA_LR, anneal_epochs=ANNEAL)
        ),
        fo.sgd,
        SGD,
        dict(momentum=0.9),
        ours_kwargs=dict(lr=_recipe_lr),
        torch_kwargs=dict(lr=0.05),
    ),
]
