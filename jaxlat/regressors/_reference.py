"""Reference regressors from other libraries, wrapped in the same protocol for comparison.

- `random_forest_regressor`: scikit-learn's RandomForest with nn-Meter's per-kernel settings.
- `xgboost_regressor`: gradient-boosted trees.

They predict on the host (numpy), are not differentiable and do not trace under `jax.jit`;
their parameters hold the fitted estimator, so they are not saved into predictor artifacts.
Install with the `reference` extra.
"""

from __future__ import annotations

import jax
import numpy as np

from .._base import Regressor, residual_log_sigma, residual_rows

#: nn-Meter's RandomForest settings for conv kernels (nn_meter/predictor/prediction/utils.py).
NN_METER_RF = dict(max_depth=70, n_estimators=320, min_samples_leaf=1, min_samples_split=2, max_features=6, oob_score=True)


def _wrap(name: str, make, config) -> Regressor:
    def predict(params, x):
        x = np.asarray(x, np.float32)
        single = x.ndim == 1
        mu = params["model"].predict(x.reshape(1, -1) if single else x)
        out = np.stack([mu, np.full_like(mu, params["log_sigma"])], axis=-1).astype(np.float32)
        return out[0] if single else out

    def fit(key, x, y, *, names, x_val=None, y_val=None):
        del names
        seed = 0 if key is None else int(np.asarray(jax.random.key_data(key)).ravel()[-1]) % (2**31 - 1)
        model = make(seed)
        model.fit(np.asarray(x, np.float32), np.asarray(y, np.float32))
        params = {"model": model, "log_sigma": np.float32(0.0)}
        xs, ys = residual_rows(x, y, x_val, y_val)
        params["log_sigma"] = residual_log_sigma(ys, predict(params, xs)[:, 0])
        return params

    return Regressor(name, fit, predict, differentiable=False, jittable=False, config=config)


def random_forest_regressor(*, n_jobs: int | None = None, **overrides) -> Regressor:
    """scikit-learn RandomForestRegressor with nn-Meter's settings (override any of them)."""
    from sklearn.ensemble import RandomForestRegressor

    settings = {**NN_METER_RF, **overrides}
    return _wrap("random_forest", lambda seed: RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **settings), settings)


def xgboost_regressor(*, n_jobs: int | None = None, **overrides) -> Regressor:
    """XGBoost regressor (hist trees); defaults suit tens of thousands of rows."""
    import xgboost

    settings = {**dict(n_estimators=1000, max_depth=8, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8), **overrides}
    return _wrap("xgboost", lambda seed: xgboost.XGBRegressor(random_state=seed, n_jobs=n_jobs, tree_method="hist", **settings), settings)
