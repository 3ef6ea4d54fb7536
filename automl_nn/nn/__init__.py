"""Networks in torch: layers, families, gates, losses and optimizers, under the vocabulary's names.

`build(arch, input_shape, n_outputs)` is what the rest of the pipeline calls; the registries here
(`BUILDERS`, `ACTIVATION_MODULES`, `INIT_FILLS`, `LOSS_FUNCTIONS`, `OPTIMIZER_FACTORIES`,
`SCHEDULE_FACTORIES`) hold the torch factories for the names `automl_nn.vocab` defines.
"""

from automl_nn.nn.families import BUILDERS, build
from automl_nn.nn.gates import Gate, cut, effective_widths, gates
from automl_nn.nn.layers import ACTIVATION_MODULES, INIT_FILLS, BasicBlock, Reshape, activation, init_weights
from automl_nn.nn.losses import LOSS_FUNCTIONS, LossFn, make_loss
from automl_nn.nn.optim import OPTIMIZER_FACTORIES, SCHEDULE_FACTORIES, make_optimizer, make_schedule

__all__ = ["ACTIVATION_MODULES", "BUILDERS", "INIT_FILLS", "LOSS_FUNCTIONS", "OPTIMIZER_FACTORIES",
           "SCHEDULE_FACTORIES", "BasicBlock", "Gate", "LossFn", "Reshape", "activation", "build", "cut",
           "effective_widths", "gates", "init_weights", "make_loss", "make_optimizer", "make_schedule"]
