"""Train one (method, seed) run of a bench dataset: the loop every method goes through unchanged.

Loss-level methods (``kind == "weighting"``): ``total = method(losses); total.backward()``, their
``param_groups(lr=weighting_lr)`` in the optimizer, ``update(new_losses)`` after each optimizer step
(recomputed on the same batch, as FAMO expects) and ``step()`` at each epoch end, where defined.
Gradient-level methods (``kind == "aggregator"``):
``awloss.backward(losses, shared_params=model.shared.parameters(), aggregator=method)``.
Single-task baselines (STL) train the same network on one task's loss only.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

import awloss
from awloss.weighting import Weighting

from .datasets import BenchError, Data, DatasetSpec, Split
from .deltam import delta_m

__all__ = ["MethodSpec", "resolve_methods", "build_method", "train_run", "SkipMethod", "STL_VERSION"]

STL_VERSION = 1  # bump when the training loop changes, to invalidate cached STL baselines


class SkipMethod(Exception):
    """The method cannot run in the bench (e.g. a constructor argument it cannot infer)."""


class _EqualWeighting(Weighting):
    """Fallback EW (plain sum) for when the registry has no ``sum``/``ew`` yet; not registered."""

    name = "ew"

    def forward(self, losses: Tensor) -> Tensor:
        self._set_weights(torch.ones_like(losses))
        return losses.sum()

    def _initial_weights(self) -> Tensor | None:
        return None if self.num_tasks is None else torch.ones(self.num_tasks)


@dataclass
class MethodSpec:
    label: str  # as the user wrote it (e.g. "ew"), used in tables
    kind: str  # "weighting" | "aggregator" | "stl"
    cls: type | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    task: int | None = None  # STL only


def _registry_class(name: str) -> type | None:
    try:
        return awloss.get_class(name)
    except KeyError:
        return None


def resolve_methods(names: Sequence[str], method_args: Mapping[str, Mapping[str, Any]]) -> list[MethodSpec]:
    """Registry classes for ``names``; a one-line :class:`BenchError` for an unknown one."""
    out = []
    for raw in names:
        label = raw.strip().lower()
        cls = _registry_class(label)
        if cls is None and label in ("ew", "sum", "equal", "ls"):
            cls = _EqualWeighting
        if cls is None:
            raise BenchError(
                f"unknown method {raw!r}; registered: {', '.join(awloss.available())} (see `awloss bench --list`)"
            )
        kind = getattr(cls, "kind", "weighting")
        if kind == "aggregator" and not hasattr(awloss, "backward"):
            raise BenchError(f"method {raw!r} is a gradient aggregator but this awloss has no `awloss.backward`")
        out.append(MethodSpec(label, kind, cls, dict(method_args.get(label, {}))))
    unknown = set(method_args) - {m.label for m in out}
    if unknown:
        raise BenchError(f"--method-args names methods not in --methods: {', '.join(sorted(unknown))}")
    return out


def _shared(model: nn.Module) -> nn.Module:
    """The trunk shared by the tasks: ``model.shared`` (the :class:`DatasetSpec` protocol of ``build_model``)."""
    return cast(nn.Module, model.shared)


def _layer_arg(model: nn.Module, annotation: Any) -> list[Any]:
    layer: nn.Module = cast(Any, model).last_shared_layer()  # (MTLModel's: see models.py)
    params = list(layer.parameters())
    return [layer, params] if "Module" in str(annotation) else [params, layer]


def build_method(spec: MethodSpec, num_tasks: int, model: nn.Module, seed: int) -> Any:
    """Instantiate ``spec``, filling ``num_tasks``, a seed/generator and a shared-layer argument if asked."""
    assert spec.cls is not None
    kw = dict(spec.kwargs)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(spec.cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        params = {}
    layer_name = None
    for pname, p in params.items():
        if pname in kw or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        low = pname.lower()
        if pname == "num_tasks":
            kw[pname] = num_tasks
        elif low == "seed":
            kw[pname] = seed
        elif low == "generator" and p.default is None:
            kw[pname] = torch.Generator().manual_seed(seed)
        elif p.default is inspect.Parameter.empty:
            if any(s in low for s in ("shared", "layer", "param", "module")):
                layer_name = pname
            else:
                raise SkipMethod(f"needs constructor argument `{pname}`; pass it with --method-args {spec.label}.{pname}=…")
    if layer_name is None:
        return spec.cls(**kw)
    errors = []
    for value in _layer_arg(model, params[layer_name].annotation):
        try:
            return spec.cls(**kw, **{layer_name: value})
        except (TypeError, ValueError, AttributeError) as e:
            errors.append(str(e))
    raise SkipMethod(f"could not pass the last shared layer as `{layer_name}`: {errors[-1]}")


def _overrides(obj: Any, name: str) -> bool:
    return isinstance(obj, Weighting) and getattr(type(obj), name) is not getattr(Weighting, name)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int) -> list[Tensor]:
    model.eval()
    outs: list[list[Tensor]] = []
    for s in range(0, len(split), batch_size):
        outs.append(model(split.x[s : s + batch_size]))
    model.train()
    return [torch.cat([o[t] for o in outs]) for t in range(len(outs[0]))]


def evaluate(ds: DatasetSpec, model: nn.Module, split: Split, batch_size: int) -> dict[str, float]:
    return ds.evaluate(predict(model, split, batch_size), split.y)


def stl_key(ds: DatasetSpec, cfg: Mapping[str, Any], seed: int, task: int | None, method: Any = None) -> str:
    """Cache key of a run: dataset config, training config, seed, task (STL) or method (class + kwargs)."""
    blob = json.dumps({"ds": ds.fingerprint(), "cfg": dict(cfg), "seed": seed, "task": task, "v": STL_VERSION,
                       "torch": torch.__version__.split("+")[0], "awloss": awloss.__version__, "method": method},
                      sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def train_run(
    ds: DatasetSpec,
    data: Data,
    spec: MethodSpec,
    seed: int,
    cfg: Mapping[str, Any],
    ref_val: Mapping[str, float] | None = None,
    progress: Callable[[int, str], Any] | None = None,
) -> dict[str, Any]:
    """Train one run; return its history, the selected epoch and the test metrics there.

    Model selection: the epoch with the lowest validation Δm% against ``ref_val`` (the STL validation
    metrics when known; else the run's own first-epoch metrics), or the last epoch if
    ``cfg["selection"] == "last"``. For an STL run only its own task's metrics count.
    """
    torch.manual_seed(seed)
    model = ds.build_model()
    train = data.train
    T = len(train.y)
    metrics = ds.metrics()
    higher = {m.name: m.higher_is_better for m in metrics}
    own = [m.name for m in metrics if spec.task is None or m.task == ds_task_name(ds, spec.task)]
    method: Any = None if spec.kind == "stl" else build_method(spec, T, model, seed)  # a Weighting or an Aggregator
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if isinstance(method, nn.Module) and hasattr(method, "param_groups"):
        groups += cast(Any, method).param_groups(lr=cfg["weighting_lr"])
    opt = torch.optim.Adam(groups, lr=cfg["lr"])
    has_update, has_step = _overrides(method, "update"), _overrides(method, "step")
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(train), int(cfg["batch_size"])
    steps = math.ceil(n / bs)
    eval_bs = max(bs, 512)
    history: list[dict[str, Any]] = []
    step_times: list[float] = []
    best, best_state, best_epoch = math.inf, None, -1
    onehot = None if spec.task is None else torch.nn.functional.one_hot(torch.tensor(spec.task), T).float()
    for epoch in range(int(cfg["epochs"])):
        perm = torch.randperm(n, generator=gen)
        w_sum, l_sum = torch.zeros(T, dtype=torch.float64), torch.zeros(T, dtype=torch.float64)
        weighted = False  # GradDrop, TrimmedMean: the update is not wᵀJ, there are no weights to record
        for b in range(steps):
            idx = perm[b * bs : (b + 1) * bs]
            x, ys = train.x[idx], [y[idx] for y in train.y]
            t0 = time.perf_counter()
            losses = torch.stack(ds.task_losses(model(x), ys))
            opt.zero_grad(set_to_none=True)
            if spec.kind == "stl":
                losses[spec.task].backward()
                w = onehot
            elif spec.kind == "weighting":
                method(losses).backward()
                w = method.weights
            else:
                w = awloss.backward(list(losses), shared_params=_shared(model).parameters(), aggregator=method)
            opt.step()
            if has_update:
                with torch.no_grad():
                    method.update(torch.stack(ds.task_losses(model(x), ys)))
            step_times.append(time.perf_counter() - t0)
            if not bool(torch.isfinite(losses).all()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}: {losses.tolist()}")
            if w is not None:
                w_sum += torch.as_tensor(w).detach().reshape(-1).double()
                weighted = True
            l_sum += losses.detach().double()
            if progress is not None:
                progress(1, "")
        if has_step:
            method.step()
        val = evaluate(ds, model, data.val, eval_bs)
        ref = ref_val if ref_val is not None else (history[0]["val"] if history else val)
        crit = delta_m({k: val[k] for k in own}, {k: ref[k] for k in own}, higher, skip_zero=True)
        history.append({"epoch": epoch + 1, "val": val, "val_delta_m": crit,
                        "weights": (w_sum / steps).tolist() if weighted else None, "train_loss": (l_sum / steps).tolist()})  # fmt: skip
        if progress is not None:
            progress(0, f"val Δm {crit:+.1f}%")
        if cfg.get("selection", "best") == "last" or crit <= best or not math.isfinite(best):
            best, best_epoch = crit, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(ds, model, data.test, eval_bs)
    times = sorted(step_times)
    return {
        "method": spec.label, "kind": spec.kind, "seed": seed, "task": spec.task,
        "best_epoch": best_epoch, "test": test, "val": history[best_epoch - 1]["val"], "history": history,
        "ms_per_step": 1000 * times[len(times) // 2] if times else float("nan"), "steps": len(step_times),
    }  # fmt: skip


def ds_task_name(ds: DatasetSpec, index: int) -> str:
    return ds.tasks[index]
