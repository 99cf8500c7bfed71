"""Optimizers on the predictor: design selection under SLOs with run-time switching, several
models sharing a device, and early-exit scheduling.

    from jaxlat import optimize

    table = optimize.DesignSpace(variants, predictors, threads=(1, 2)).evaluate(np.linspace(0, 1, 11))
    optimize.choose(table, optimize.SLO(max_p90_ms=30), utilization=0.5)
    table = optimize.calibrate_table(table, cal.log_affine, backend="torch")   # to this machine
    optimize.switch_table(table, {"30ms": optimize.SLO(max_p90_ms=30)}).lookup("30ms", 0.42)
    optimize.eenet_policy(val_outputs, exit_costs_ms, budget_ms=2.0)
"""

from ._designs import SLO as SLO
from ._designs import DesignSpace as DesignSpace
from ._designs import SwitchTable as SwitchTable
from ._designs import Variant as Variant
from ._designs import choose as choose
from ._designs import choose_jointly as choose_jointly
from ._designs import fair_scores as fair_scores
from ._designs import induced_utilization as induced_utilization
from ._designs import memory_mb as memory_mb
from ._designs import pareto_front as pareto_front
from ._designs import switch_table as switch_table
from ._early_exit import ExitOutputs as ExitOutputs
from ._early_exit import ExitPolicy as ExitPolicy
from ._early_exit import MultiExitNet as MultiExitNet
from ._early_exit import eenet_policy as eenet_policy
from ._early_exit import entropy_policy as entropy_policy
from ._early_exit import evaluate_policy as evaluate_policy
from ._early_exit import exit_costs_ms as exit_costs_ms
from ._early_exit import exit_outputs as exit_outputs
from ._early_exit import geometric_policy as geometric_policy
from ._early_exit import train_multi_exit as train_multi_exit
from ._tables import LATENCY_COLUMNS as LATENCY_COLUMNS
from ._tables import calibrate_table as calibrate_table
