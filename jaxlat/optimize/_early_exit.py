"""Early-exit scheduling with the predictor in the loop (EENet-style).

A multi-exit network (NAS-Bench-201's skeleton with a fixed cell and classifier heads after
chosen cells) is trained on digits. Each exit's cost is the predicted latency of the network run
up to it, every earlier head included (`exit_costs_ms`). A policy sends each sample out at the
first exit whose score clears that exit's threshold; the last exit takes the rest. Policies:

- `eenet_policy` (learned): per exit, a correctness scorer (logistic regression on the exit's
  max probability, entropy and margin, and the previous exit's); an exit-assignment head over
  the scorers' outputs, trained with optax to maximize expected accuracy with the budget penalty
  `|sum_k p_k c_k - B| / B` on the mean exit distribution `p`; per-exit thresholds then derived
  so that the validation samples leave in that distribution.
- `entropy_policy` (BranchyNet): one entropy threshold for every exit, set by bisection to meet
  the budget.
- `geometric_policy` (MSDNet): exit distribution `p_k` proportional to `q^k`, `q` set to meet
  the budget; thresholds on the max probability derived like EENet's.

    model = train_multi_exit(space, arch, exits, data)
    val, test = exit_outputs(model, data.x_arch, data.y_arch), exit_outputs(model, data.x_test, data.y_test)
    costs = exit_costs_ms(predictor, space, arch, exits)
    policy = eenet_policy(val, costs, budget_ms=0.6 * costs[-1])
    evaluate_policy(policy, test, costs)        # accuracy, mean cost, exit distribution
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from profilers.spaces import NB201_EDGES, Nb201Arch, Nb201Space

from ..nas._search import Data, _batches
from ..nas._supernet import BatchNorm, ConvBN, _nb201_edge, _Reduction

if TYPE_CHECKING:
    from .._predictor import LatencyPredictor


class MultiExitNet(nnx.Module):
    """NAS-Bench-201's network with a fixed cell and a head after each exit point:
    `model(x) -> [logits of exit 1, ..., logits of exit K]`."""

    def __init__(self, space: Nb201Space, arch: Nb201Arch, exits: Sequence[tuple[int, int]], *, rngs: nnx.Rngs):
        space._check_exits(exits)
        c = space.c
        self.stem = ConvBN(3, c, 3, rngs=rngs)
        self.plan: list[tuple[str, int]] = []  # ("reduction"|"cell"|"head", index)
        blocks, heads = [], []
        last_stage, last_cells = exits[-1]
        for g in range(last_stage + 1):
            width = c * 2**g
            if g:
                blocks.append(_Reduction(width // 2, width, rngs=rngs))
                self.plan.append(("block", len(blocks) - 1))
            for k in range(1, (space.cells if g < last_stage else last_cells) + 1):
                blocks.append(nnx.List([_nb201_edge(op, width, rngs) for op in arch.edges]))
                self.plan.append(("cell", len(blocks) - 1))
                if (g, k) in exits:
                    heads.append(nnx.List([BatchNorm(width, rngs=rngs), nnx.Linear(width, space.classes, rngs=rngs)]))
                    self.plan.append(("head", len(heads) - 1))
        self.blocks, self.heads = nnx.List(blocks), nnx.List(heads)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        x = self.stem(x)
        outs = []
        for kind, i in self.plan:
            if kind == "block":
                x = self.blocks[i](x)
            elif kind == "cell":
                nodes = [x]
                for j in (1, 2, 3):
                    acc = 0.0
                    for (t, src), op in zip(NB201_EDGES, self.blocks[i]):
                        if t == j:
                            acc = acc + op(nodes[src])
                    nodes.append(acc)
                x = nodes[-1]
            else:
                bn, fc = self.heads[i]
                outs.append(fc(jax.nn.relu(bn(x)).mean((1, 2))))
        return outs


@dataclasses.dataclass
class TrainedExits:
    """A trained multi-exit network: graph definition and parameters."""

    graphdef: Any
    params: Any

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in nnx.merge(self.graphdef, self.params)(jnp.asarray(x))]


def train_multi_exit(space: Nb201Space, arch: Nb201Arch, exits: Sequence[tuple[int, int]], data: Data, *,
                     epochs: int = 20, batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> TrainedExits:
    """Train every exit at once (mean cross-entropy over exits) on the weight split."""
    model = MultiExitNet(space, arch, exits, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y):
        def loss(p):
            outs = nnx.merge(graphdef, p)(x)
            return sum(optax.softmax_cross_entropy_with_integer_labels(o, y).mean() for o in outs) / len(outs)

        g = jax.grad(loss)(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in _batches(len(data.y_weights), min(batch_size, len(data.y_weights)), rng):
            params, state = step(params, state, data.x_weights[idx], data.y_weights[idx])
    return TrainedExits(graphdef, params)


class ExitOutputs(NamedTuple):
    """Every exit's softmax on a set of samples: `probs [n, K, classes]`, `labels [n]`."""

    probs: np.ndarray
    labels: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """`[n, K]`: exit k's prediction is right."""
        return self.probs.argmax(-1) == self.labels[:, None]

    def features(self) -> np.ndarray:
        """`[n, K, 3]`: max probability, entropy, margin (top-1 minus top-2) of each exit."""
        p = np.clip(self.probs, 1e-12, 1.0)
        top = np.sort(p, axis=-1)
        return np.stack([top[..., -1], -(p * np.log(p)).sum(-1), top[..., -1] - top[..., -2]], axis=-1)


def exit_outputs(model: TrainedExits, x: np.ndarray, y: np.ndarray, batch: int = 256) -> ExitOutputs:
    outs = [model(x[i:i + batch]) for i in range(0, len(x), batch)]
    probs = np.stack([np.concatenate([np.asarray(jax.nn.softmax(o[k])) for o in outs]) for k in range(len(outs[0]))], 1)
    return ExitOutputs(probs, np.asarray(y))


def exit_costs_ms(predictor: LatencyPredictor, space: Nb201Space, arch: Nb201Arch, exits: Sequence[tuple[int, int]]) -> np.ndarray:
    """Predicted latency (ms) of leaving at each exit: the network up to it, every earlier
    exit's head included, in one vectorized call."""
    recs = [space.prefix_record(arch, exits[: k + 1]) for k in range(len(exits))]
    return predictor.predict_models(recs)["latency_ms"].to_numpy(float)


class ExitPolicy(NamedTuple):
    """Send a sample out at the first exit k with `score_k >= thresholds[k]` (the last exit takes
    the rest). `score` names what is thresholded: `confidence` (max probability), `entropy`
    (negated, so higher is surer) or `eenet` (the learned correctness scorer)."""

    name: str
    score: str
    thresholds: np.ndarray
    scorer: Any = None  # eenet: per-exit logistic weights

    def scores(self, out: ExitOutputs) -> np.ndarray:
        f = out.features()
        if self.score == "confidence":
            return f[..., 0]
        if self.score == "entropy":
            return -f[..., 1]
        return _scorer_probs(self.scorer, f)

    def assign(self, out: ExitOutputs) -> np.ndarray:
        """Exit index per sample."""
        s = self.scores(out)
        k = s.shape[1]
        passed = s[:, :-1] >= self.thresholds[None, : k - 1]
        first = np.where(passed.any(1), passed.argmax(1), k - 1)
        return first


def evaluate_policy(policy: ExitPolicy, out: ExitOutputs, costs_ms: np.ndarray) -> dict[str, Any]:
    """Accuracy, mean cost per sample (ms, from `costs_ms`) and the exit distribution."""
    e = policy.assign(out)
    dist = np.bincount(e, minlength=out.probs.shape[1]) / len(e)
    return {"policy": policy.name, "accuracy": float(out.correct[np.arange(len(e)), e].mean()),
            "mean_cost_ms": float(dist @ costs_ms), "exit_distribution": dist.tolist()}


def _thresholds_for(scores: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-exit thresholds under which the samples leave in `dist` (sequentially: of those still
    in, the `dist[k] * n` with the highest score at exit k leave there)."""
    n, k = scores.shape
    remaining = np.ones(n, bool)
    th = np.full(k, np.inf)
    for j in range(k - 1):
        take = min(int(round(dist[j] * n)), int(remaining.sum()))
        if take <= 0:
            continue
        s = np.where(remaining, scores[:, j], -np.inf)
        order = np.argsort(-s)
        th[j] = s[order[take - 1]]
        remaining &= ~(s >= th[j])
    return th


def _budget_distribution(weights: np.ndarray, costs: np.ndarray, budget: float) -> np.ndarray:
    """`weights * exp(-beta * costs)`, normalized, with beta set by bisection so that the
    expected cost is `budget` (clipped to what the exits allow)."""
    budget = float(np.clip(budget, costs.min(), costs.max()))
    w = np.maximum(np.asarray(weights, float), 1e-12)
    lo, hi = -50.0, 50.0
    scale = 1.0 / max(costs.max() - costs.min(), 1e-9)
    for _ in range(100):
        beta = (lo + hi) / 2
        p = w * np.exp(-beta * (costs - costs.min()) * scale)
        p /= p.sum()
        if p @ costs > budget:
            lo = beta
        else:
            hi = beta
    return p


def geometric_policy(val: ExitOutputs, costs_ms: np.ndarray, budget_ms: float) -> ExitPolicy:
    """MSDNet's budgeted schedule: exit distribution `p_k ~ q^k` with `q` meeting the budget, on
    max-probability thresholds."""
    k = len(costs_ms)
    budget = float(np.clip(budget_ms, costs_ms.min(), costs_ms.max()))
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        q = np.sqrt(lo * hi)
        p = q ** np.arange(k)
        p /= p.sum()
        if p @ costs_ms > budget:
            hi = q
        else:
            lo = q
    conf = val.features()[..., 0]
    return ExitPolicy("geometric (MSDNet)", "confidence", _thresholds_for(conf, p))


def entropy_policy(val: ExitOutputs, costs_ms: np.ndarray, budget_ms: float) -> ExitPolicy:
    """BranchyNet: one entropy threshold at every exit, set by bisection to meet the budget."""
    k = len(costs_ms)
    lo, hi = 0.0, float(np.log(val.probs.shape[-1])) + 1e-6
    for _ in range(60):
        t = (lo + hi) / 2
        pol = ExitPolicy("entropy (BranchyNet)", "entropy", np.full(k, -t))
        if evaluate_policy(pol, val, costs_ms)["mean_cost_ms"] > budget_ms:
            lo = t  # exit more readily
        else:
            hi = t
    return ExitPolicy("entropy (BranchyNet)", "entropy", np.full(k, -(lo + hi) / 2))


def _scorer_inputs(f: np.ndarray) -> np.ndarray:
    """Per exit: its own features and the previous exit's (zeros at the first): `[n, K, 6]`."""
    prev = np.concatenate([np.zeros_like(f[:, :1]), f[:, :-1]], axis=1)
    return np.concatenate([f, prev], axis=-1)


def _scorer_probs(scorer: dict[str, np.ndarray], f: np.ndarray) -> np.ndarray:
    z = (_scorer_inputs(f) - scorer["mean"]) / scorer["scale"]
    return np.asarray(jax.nn.sigmoid(np.einsum("nkf,kf->nk", z, scorer["w"]) + scorer["b"]))


def eenet_policy(val: ExitOutputs, costs_ms: np.ndarray, budget_ms: float, *, penalty: float = 10.0,
                 steps: int = 1500, lr: float = 0.02, seed: int = 0) -> ExitPolicy:
    """The learned scheduler (see the module docstring)."""
    k = len(costs_ms)
    f = val.features()
    x = _scorer_inputs(f)
    mean, scale = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    z = jnp.asarray((x - mean) / scale)
    correct = jnp.asarray(val.correct, jnp.float32)
    costs = jnp.asarray(costs_ms, jnp.float32)
    # 1. Correctness scorers: per exit, logistic regression on its inputs.
    theta = {"w": jnp.zeros((k, x.shape[-1])), "b": jnp.zeros((k,))}
    opt = optax.adam(lr)
    st = opt.init(theta)

    def bce(th):
        logit = jnp.einsum("nkf,kf->nk", z, th["w"]) + th["b"]
        return optax.sigmoid_binary_cross_entropy(logit, correct).mean() + 1e-3 * (th["w"] ** 2).sum()

    @jax.jit
    def s_step(th, st):
        g = jax.grad(bce)(th)
        u, st = opt.update(g, st, th)
        return optax.apply_updates(th, u), st

    for _ in range(steps):
        theta, st = s_step(theta, st)
    scorer = {"w": np.asarray(theta["w"]), "b": np.asarray(theta["b"]), "mean": mean, "scale": scale}
    g = jnp.asarray(_scorer_probs(scorer, f))
    # 2. Exit assignment: q(x) = softmax(MLP(logit g(x))); expected accuracy minus the budget penalty.
    key = jax.random.key(seed)
    h = 16
    phi = {"w1": jax.random.normal(key, (k, h)) * 0.1, "b1": jnp.zeros(h),
           "w2": jax.random.normal(jax.random.fold_in(key, 1), (h, k)) * 0.1, "b2": jnp.zeros(k)}
    lg = jnp.log(g / (1 - g + 1e-6) + 1e-6)

    def objective(p):
        q = jax.nn.softmax(jax.nn.silu(lg @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"], axis=-1)
        acc = (q * correct).sum(-1).mean()
        mean_q = q.mean(0)
        return -acc + penalty * jnp.abs(mean_q @ costs - budget_ms) / budget_ms, mean_q

    opt2 = optax.adam(lr)
    st2 = opt2.init(phi)

    @jax.jit
    def a_step(p, st):
        g_, _ = jax.grad(objective, has_aux=True)(p)
        u, st = opt2.update(g_, st, p)
        return optax.apply_updates(p, u), st

    for _ in range(steps):
        phi, st2 = a_step(phi, st2)
    _, mean_q = objective(phi)
    # 3. Thresholds: the learned distribution, nudged to meet the budget exactly, on the scorers.
    dist = _budget_distribution(np.asarray(mean_q), np.asarray(costs_ms), budget_ms)
    return ExitPolicy("learned (EENet)", "eenet", _thresholds_for(np.asarray(g), dist), scorer)
