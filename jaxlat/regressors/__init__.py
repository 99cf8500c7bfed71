"""Regressors: per-type baselines (ridge, polynomial ridge, MLP, roofline, piecewise roofline),
MEDN over all types, blends of two fitted ones, and reference tree ensembles (scikit-learn
RandomForest, XGBoost)."""

from ._blend import blend_params as blend_params
from ._blend import blend_regressor as blend_regressor
from ._linear import poly_ridge_regressor as poly_ridge_regressor
from ._linear import ridge_regressor as ridge_regressor
from ._medn import MEDN as MEDN
from ._medn import MEDNConfig as MEDNConfig
from ._medn import MultiTaskRegressor as MultiTaskRegressor
from ._medn import medn_regressor as medn_regressor
from ._medn import medn_task_view as medn_task_view
from ._mlp import mlp_regressor as mlp_regressor
from ._recipe import Recipe as Recipe
from ._reference import random_forest_regressor as random_forest_regressor
from ._reference import xgboost_regressor as xgboost_regressor
from ._registry import RegressorEntry as RegressorEntry
from ._registry import register_regressor as register_regressor
from ._registry import regressor_entry as regressor_entry
from ._registry import regressor_names as regressor_names
from ._roofline import piecewise_roofline_regressor as piecewise_roofline_regressor
from ._roofline import roofline_regressor as roofline_regressor
