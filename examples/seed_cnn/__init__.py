"""The seed CNN's reusable pieces (the main job is ``examples/train_cnn.py``).

* :mod:`~examples.seed_cnn.data` — upsampled sklearn digits, MNIST idx files, batch order.
* :mod:`~examples.seed_cnn.model_flax` — the flax model, its params, loss and accuracy.
* :mod:`~examples.seed_cnn.pooling` — 2×2 max pooling with torch's gradient rule.
* :mod:`~examples.seed_cnn.convolution` — conv1's forward pass as nine multiply-adds.
* :mod:`~examples.seed_cnn.model_torch` — the same model in torch (imports torch).
* :mod:`~examples.seed_cnn.weights` — flax ⇄ torch weight layouts.
* :mod:`~examples.seed_cnn.side_by_side` — side-by-side training against torch, per-step report.
* :mod:`~examples.seed_cnn.xla_cpu` — the XLA:CPU setting the main job trains with.
* :mod:`~examples.seed_cnn.allocator` — the host-memory setting it trains with (no page faults per step).
"""
