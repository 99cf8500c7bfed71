"""The regressor registry: name -> how to build the regressor from its saved configuration.

Training, selection, saving and loading look regressors up here, never by special names.
A multi-task regressor (MEDN) is fitted over all module types at once and serves each type
through a task view; every other regressor is fitted per module type.

    from jaxlat.regressors import register_regressor, ridge_regressor
    register_regressor("ridge_strong", lambda config: ridge_regressor(alpha=10.0))

A predictor saved with a user-registered regressor loads where the same name is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._blend import blend_regressor
from ._linear import poly_ridge_regressor
from ._medn import medn_regressor, medn_task_regressor
from ._mlp import mlp_regressor
from ._recipe import DEFAULT, LEGACY, Recipe, as_recipe
from ._roofline import piecewise_roofline_regressor, roofline_regressor


class RegressorEntry(NamedTuple):
    """A registered regressor.

    Attributes:
      name: the registry name, stored in predictor artifacts.
      build: `config -> Regressor` (or `MultiTaskRegressor`), from the configuration saved with
        the artifact (`{}` builds the defaults; the MLP and MEDN read their training recipe
        from it, see `_recipe`).
      multi_task: fitted over all module types at once (MEDN).
      trainable: fitted from rows (`train_predictor`, selection); False for a regressor that is
        only assembled from fitted ones and rebuilt when a predictor loads (`blend`).
    """

    name: str
    build: Callable[[Mapping[str, Any]], Any]
    multi_task: bool = False
    trainable: bool = True


def _recipe(c: Mapping[str, Any], architecture: str) -> Recipe:
    """The training recipe a configuration asks for (`jaxlat.regressors._recipe`).

    Its `recipe` entry (a `Recipe` or its saved settings) where it has one. Without one, a
    configuration that names the architecture (`architecture`: every MLP and MEDN saved before
    recipes were recorded has it) is a saved artifact's and gets recipe 1, the one it was
    trained with; a bare configuration (`{}`, or training overrides alone, as training and
    selection build regressors) gets the current default.
    """
    if c.get("recipe") is not None:
        return as_recipe(c["recipe"])
    return LEGACY if architecture in c else DEFAULT


def _medn(c: Mapping[str, Any]):
    keys = ("embed_dim", "encoder", "latent", "decoder")
    settings = {k: (tuple(c[k]) if isinstance(c[k], list) else c[k]) for k in keys if k in c}
    return medn_regressor(**settings, **({"train": c["train"]} if "train" in c else {}), recipe=_recipe(c, "encoder"),
                          members=c.get("members", 1))


def _mlp(c: Mapping[str, Any]):
    kw = {"train": c["train"]} if "train" in c else {}
    return mlp_regressor(tuple(c.get("hidden", (256, 256, 256))), activation=c.get("activation", "relu"),
                         recipe=_recipe(c, "hidden"), members=c.get("members", 1), **kw)


_REGISTRY: dict[str, RegressorEntry] = {
    "medn": RegressorEntry("medn", _medn, multi_task=True),
    "mlp": RegressorEntry("mlp", _mlp),
    "ridge": RegressorEntry("ridge", lambda c: poly_ridge_regressor(1, alpha=c.get("alpha"))),
    "poly2": RegressorEntry("poly2", lambda c: poly_ridge_regressor(2, alpha=c.get("alpha"))),
    "poly3": RegressorEntry("poly3", lambda c: poly_ridge_regressor(3, alpha=c.get("alpha"))),
    "roofline": RegressorEntry("roofline", lambda c: roofline_regressor()),
    "roofline_pw": RegressorEntry("roofline_pw", lambda c: piecewise_roofline_regressor()),
}


def _part(spec: Mapping[str, Any]):
    """A blend's part from its spec (`_blend.part_spec`)."""
    config = spec.get("config", {})
    entry = regressor_entry(spec.get("regressor"))
    if not entry.multi_task:
        return entry.build(config)
    if "task" not in config or "task_index" not in config:
        raise ValueError(f"blend: its {entry.name} part names no task and task_index")
    return medn_task_regressor(entry.build(config), str(config["task"]), int(config["task_index"]))


def _blend(c: Mapping[str, Any]):
    parts = c.get("parts")
    if not parts:
        raise ValueError("regressor='blend' is not trained from rows: `jaxlat calibrate` builds it from two "
                         "fitted models of a type; train one of the others")
    return blend_regressor(_part(parts[0]), _part(parts[1]), parts)


_REGISTRY["blend"] = RegressorEntry("blend", _blend, trainable=False)


def register_regressor(name: str, build: Callable[[Mapping[str, Any]], Any], *, multi_task: bool = False,
                       replace: bool = False) -> RegressorEntry:
    """Make a regressor available to training, selection and loading under `name`.

    Args:
      name: the registry name (stored in saved predictors).
      build: `config -> Regressor`; the regressor's `predict` must be pure JAX to be saved.
      multi_task: fitted over all module types at once, as MEDN (its `fit` takes a mapping
        module -> (x, y)).
      replace: allow replacing an existing entry.

    Raises:
      ValueError: the name is taken and `replace` is False.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"register_regressor: name={name!r} is not valid: expected a non-empty string")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_regressor: {name!r} is already registered; pass replace=True to replace it")
    entry = RegressorEntry(name, build, multi_task)
    _REGISTRY[name] = entry
    return entry


def regressor_entry(name: str) -> RegressorEntry:
    """The registered regressor `name`.

    Raises:
      ValueError: no such name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"regressor={name!r} is not valid: expected one of {', '.join(regressor_names())}") from None


def regressor_names() -> tuple[str, ...]:
    """Names of every registered regressor that trains from rows, in registration order (a
    `blend`, assembled by `jaxlat calibrate`, is registered for loading only)."""
    return tuple(n for n, e in _REGISTRY.items() if e.trainable)
