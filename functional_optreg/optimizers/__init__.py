"""torch.optim optimizers as optax gradient transformations, one module each."""

from functional_optreg.optimizers.adam import AdamState as AdamState
from functional_optreg.optimizers.adam import adam as adam
from functional_optreg.optimizers.adam import adamw as adamw
from functional_optreg.optimizers.ema_momentum import EmaMomentumState as EmaMomentumState
from functional_optreg.optimizers.ema_momentum import ema_momentum as ema_momentum
from functional_optreg.optimizers.sgd import SGDState as SGDState
from functional_optreg.optimizers.sgd import sgd as sgd
