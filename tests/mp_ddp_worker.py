"""The torch side of scale-out: the MLP of tests/mp_train_worker.py under ``DistributedDataParallel``.

Started by tests/mp_harness.py's ``launch`` (its environment gives the rank, the world size and
the address, used for ``init_process_group("gloo", "tcp://...")``). Each rank takes its half of
every global batch of mp_train_worker, DDP averages the gradients, and SGD(momentum) and AdamW
(the hyperparameters of mp_train_worker's ``sgd_momentum`` and ``adamw``) train from its float64
start. Rank 0 writes ``trajectory.npz`` (``<optimizer>/<step>/<leaf path>``, the keys of
mp_train_worker's trajectory) and ``<optimizer>_optimizer.pt`` (its optimizer's ``state_dict()``).
Usage (under the harness)::

    python tests/mp_ddp_worker.py OUTDIR --steps 50
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mp_harness  # noqa: E402
import mp_train_worker  # noqa: E402
import numpy as np  # noqa: E402

OPTIMIZERS = ("sgd_momentum", "adamw")


def torch_mlp(host_params):
    """A torch module holding ``host_params``, its parameters named ``layer<i>.kernel`` / ``.bias`` as in JAX."""
    import torch

    class Layer(torch.nn.Module):
        def __init__(self, kernel, bias):
            super().__init__()
            self.kernel = torch.nn.Parameter(torch.tensor(kernel))
            self.bias = torch.nn.Parameter(torch.tensor(bias))

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = list(host_params)
            for name in self.names:
                setattr(self, name, Layer(**host_params[name]))

        def forward(self, x):
            for name in self.names[:-1]:
                layer = getattr(self, name)
                x = torch.tanh(x @ layer.kernel + layer.bias)
            last = getattr(self, self.names[-1])
            return torch.log_softmax(x @ last.kernel + last.bias, dim=1)

    return MLP()


def torch_optimizer(name: str, parameters):
    """torch's twin of mp_train_worker's ``make_optimizer(name)``."""
    import torch

    if name == "sgd_momentum":
        return torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=1e-3)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=0.01, weight_decay=0.1)
    raise ValueError(f"unknown optimizer {name!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = int(os.environ[mp_harness.PROCESS_ID]), int(os.environ[mp_harness.NUM_PROCESSES])
    dist.init_process_group(
        "gloo", init_method=f"tcp://{os.environ[mp_harness.COORDINATOR]}", rank=rank, world_size=world
    )
    host, _, batch = mp_train_worker.init_model("mlp", np.float64)
    share = mp_train_worker.BATCH["mlp"] // world
    trajectory = {}
    for name in OPTIMIZERS:
        model = torch_mlp(host)
        ddp = DistributedDataParallel(model)
        optimizer = torch_optimizer(name, model.parameters())
        for k in range(args.steps):
            x, y = batch(k)
            rows = slice(rank * share, (rank + 1) * share)
            optimizer.zero_grad()
            torch.nn.functional.nll_loss(ddp(torch.tensor(x[rows])), torch.tensor(y[rows])).backward()
            optimizer.step()
            for path, value in model.named_parameters():
                layer, leaf = path.split(".")
                trajectory[f"replicated/{name}/{k + 1}/['{layer}']['{leaf}']"] = value.detach().numpy().copy()
        if rank == 0:
            torch.save(optimizer.state_dict(), os.path.join(args.outdir, f"{name}_optimizer.pt"))
    if rank == 0:
        np.savez(os.path.join(args.outdir, "trajectory.npz"), **trajectory)
    dist.destroy_process_group()
    mp_harness.write_json(args.outdir, f"process_{rank}.json", {"steps": args.steps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
