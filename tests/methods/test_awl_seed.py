"""The seed's users swap one import line: their usage patterns, run against the seed's formula as an oracle.

Each test writes the training code the way the seed's client repositories write it (619496775/MIA-SR,
gozdeg/Morph-Net, IcedWatermelonJuice/FS-SEI, imLabNTU/VIUNet, blcunlp/mT-ICL) and runs it three times
from the same initial model: with ``SeedAWL`` (the seed's formula, written out below), with
``AutomaticWeightedLoss(..., parameterization="sigma")`` (must be bit-identical at every step) and with the
default log-variance parameterization (same objective at every step, its own path).
"""

from __future__ import annotations

import copy
import importlib
import io
import math
import warnings
from itertools import chain

import pytest
import torch
from torch import nn

from awloss import AutomaticWeightedLoss, UncertaintyWeighting


class SeedAWL(nn.Module):
    """Oracle: the seed's module, Σ 0.5/p_i²·L_i + ln(1 + p_i²) with p = 1 at init, as its README gives it."""

    def __init__(self, num=2):
        super().__init__()
        self.params = nn.Parameter(torch.ones(num))

    def forward(self, *x):
        loss_sum = 0
        for i, loss in enumerate(x):
            loss_sum += 0.5 / (self.params[i] ** 2) * loss + torch.log(1 + self.params[i] ** 2)
        return loss_sum


def seed_formula(sigma, losses):
    return sum(0.5 / s**2 * l + math.log(1 + s**2) for s, l in zip(sigma, losses))


class Heads(nn.Module):
    def __init__(self, n_heads=2):
        super().__init__()
        self.trunk = nn.Linear(6, 12)
        self.heads = nn.ModuleList(nn.Linear(12, 1) for _ in range(n_heads))

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        return [head(h).squeeze(-1) for head in self.heads]


def batches(n, n_heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 6.0, 0.3, 2.0])[:n_heads]
    return [(torch.randn(16, 6, generator=g), torch.randn(16, n_heads, generator=g) * scales) for _ in range(n)]


def task_losses(model, x, y):
    return [nn.functional.mse_loss(p, y[:, i]) for i, p in enumerate(model(x))]


def three(num, **kw):
    """The oracle and awloss in both parameterizations, each with its own copy of one initial model."""
    torch.manual_seed(0)
    model = Heads(kw.pop("n_heads", 2))
    return [
        (copy.deepcopy(model), SeedAWL(num)),
        (copy.deepcopy(model), AutomaticWeightedLoss(num, parameterization="sigma", **kw)),
        (copy.deepcopy(model), AutomaticWeightedLoss(num, **kw)),
    ]


def logged_sigma(awl):
    return [p.item() for p in awl.params]  # how the clients log it (`awl.params[i].item()`)


def assert_same_run(seed_log, sigma_log, default_log, *, logged_at_init=True):
    """Sigma mode: bit-identical trajectory. Default: the seed's objective at init (and, checked by the
    callers, at its own σ at every step)."""
    for (s_sig, s_tot, s_model), (a_sig, a_tot, a_model) in zip(seed_log, sigma_log):
        assert s_sig == a_sig and s_tot == a_tot
        assert all(torch.equal(p, q) for p, q in zip(s_model, a_model))
    if logged_at_init:
        assert seed_log[0][1] == pytest.approx(default_log[0][1], rel=1e-6)  # same objective at init
    assert seed_log[-1][0] != seed_log[0][0], "σ should have moved"


def run(model, awl, opt, data, *, n_losses=None):
    out = []
    for x, y in data:
        losses = task_losses(model, x, y)[: n_losses or None]
        total = awl(*losses)
        if isinstance(awl, AutomaticWeightedLoss):  # awloss's total is the seed's formula at awloss's σ
            assert total.item() == pytest.approx(seed_formula(awl.sigma.tolist(), [l.item() for l in losses]), rel=1e-5)
        opt.zero_grad()
        total.backward()
        opt.step()
        out.append((logged_sigma(awl), total.item(), [p.detach().clone() for p in model.parameters()]))
    return out


# ----------------------------------------------------------------- usage patterns, written the client's way
def test_separate_group_with_weight_decay_0_module_left_on_cpu_fewer_losses_than_num():
    """MIA-SR main1.py: `AutomaticWeightedLoss(4)` never moved, called with 2 losses, Adam betas (0.9, 0.98)."""
    logs = []
    for i, (model, awl) in enumerate(three(4)):
        opt = torch.optim.Adam(
            [{"params": model.parameters()}, {"params": awl.parameters(), "weight_decay": 0}], lr=1e-3, betas=(0.9, 0.98)
        )
        if i == 0:
            logs.append(run(model, awl, opt, batches(30), n_losses=2))
            continue
        with pytest.warns(UserWarning, match=r"AutomaticWeightedLoss\(4\) got 2 losses.*σ_3..σ_4 get no gradient"):
            logs.append(run(model, awl, opt, batches(30), n_losses=2))
        assert awl.weights.shape == (2,)
    assert_same_run(*logs)
    for log in logs:
        assert log[-1][0][2:] == [1.0, 1.0]  # σ_3, σ_4 untouched, as in the seed


def test_chain_of_parameters_with_the_models_weight_decay():
    """`Adam(chain(model.parameters(), awl.parameters()), weight_decay=...)`: the decay reaches σ too."""
    logs = []
    for model, awl in three(2):
        opt = torch.optim.Adam(chain(model.parameters(), awl.parameters()), lr=1e-3, weight_decay=1e-2)
        logs.append(run(model, awl, opt, batches(30)))
    assert_same_run(*logs)


def test_create_model_factory_with_num_3_and_its_own_sgd():
    """FS-SEI pretext.py: `create_model(root, num=3).to(device)`, its own SGD with momentum and weight decay,
    a StepLR, validation under `torch.no_grad()` with `.item()` of every loss and of the total."""

    def create_model(cls, **kwargs):  # the client's factory: a class looked up by name, built from kwargs
        return cls(**kwargs)

    logs = []
    for model, awl_cls in zip(
        (m for m, _ in three(3, n_heads=3)),
        (SeedAWL, lambda **kw: AutomaticWeightedLoss(parameterization="sigma", **kw), AutomaticWeightedLoss),
    ):
        mtl = create_model(awl_cls, num=3).to("cpu")
        opts = [
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
            torch.optim.SGD(mtl.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
        ]
        scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in opts]
        log = []
        for x, y in batches(30, n_heads=3):
            items = task_losses(model, x, y)
            items.append(mtl(*items))
            for o in opts:
                o.zero_grad()
            items[-1].backward()
            for o in opts:
                o.step()
            for s in scheds:
                s.step()
            with torch.no_grad():  # validation
                val = task_losses(model, *batches(1, n_heads=3, seed=1)[0])
                val_total = mtl(*val)
            sigma = [p.item() for p in mtl.params]
            assert not val_total.requires_grad
            assert val_total.item() == pytest.approx(seed_formula(sigma, [v.item() for v in val]), rel=1e-5)
            log.append((sigma, val_total.item(), [p.detach().clone() for p in model.parameters()]))
        logs.append(log)
    assert_same_run(*logs, logged_at_init=False)


def test_validation_under_no_grad_and_eval_mode_leave_sigma_alone():
    """Morph-Net / FS-SEI: `model.eval()` (sometimes `awl.eval()`) and `with torch.no_grad(): awl(...)`."""
    logs = []
    for model, awl in three(2):
        opt = torch.optim.Adam([{"params": model.parameters()}, {"params": awl.parameters(), "lr": 1e-2, "weight_decay": 0}])
        log = []
        for step, (x, y) in enumerate(batches(20)):
            awl.train()
            total = awl(*task_losses(model, x, y))
            opt.zero_grad()
            total.backward()
            opt.step()
            before = logged_sigma(awl)
            awl.eval()
            with torch.no_grad():
                val_losses = task_losses(model, *batches(1, seed=2)[0])
                val = awl(*val_losses)
            assert logged_sigma(awl) == before and val.grad_fn is None
            assert val.item() == pytest.approx(seed_formula(before, [v.item() for v in val_losses]), rel=1e-6)
            log.append((before, val.item(), [p.detach().clone() for p in model.parameters()]))
        logs.append(log)
    assert_same_run(*logs, logged_at_init=False)


def test_state_dict_save_load_resumes_the_same_trajectory():
    """Checkpoint {model, awl, optimizer} with torch.save after 15 steps, resume in fresh objects."""
    data = batches(30)
    for make in (SeedAWL, lambda n: AutomaticWeightedLoss(n, parameterization="sigma"), AutomaticWeightedLoss):
        torch.manual_seed(0)
        model, awl = Heads(), make(2)
        opt = torch.optim.Adam([{"params": model.parameters()}, {"params": awl.parameters(), "weight_decay": 0}])
        full_model, full_awl = copy.deepcopy(model), copy.deepcopy(awl)
        full_opt = torch.optim.Adam([{"params": full_model.parameters()}, {"params": full_awl.parameters(), "weight_decay": 0}])
        full = run(full_model, full_awl, full_opt, data)
        run(model, awl, opt, data[:15])
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "awl": awl.state_dict(), "opt": opt.state_dict()}, buf)
        buf.seek(0)
        ckpt = torch.load(buf)
        model2, awl2 = Heads(), make(2)
        model2.load_state_dict(ckpt["model"])
        awl2.load_state_dict(ckpt["awl"])
        opt2 = torch.optim.Adam([{"params": model2.parameters()}, {"params": awl2.parameters(), "weight_decay": 0}])
        opt2.load_state_dict(ckpt["opt"])
        resumed = run(model2, awl2, opt2, data[15:])
        for a, b in zip(resumed, full[15:], strict=True):  # bit-identical to the uninterrupted run
            assert a[0] == b[0] and a[1] == b[1] and all(torch.equal(p, q) for p, q in zip(a[2], b[2]))


def seed_run_with_checkpoint(steps=20):
    """A seed run: (its state, its optimizer state, σ after one more step)."""
    torch.manual_seed(0)
    model, seed = Heads(), SeedAWL(2)
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": seed.parameters(), "weight_decay": 0}], lr=1e-2)
    data = batches(steps + 1)
    run(model, seed, opt, data[:steps])
    ckpt = copy.deepcopy({"model": model.state_dict(), "awl": seed.state_dict(), "opt": opt.state_dict()})
    run(model, seed, opt, data[steps:])
    return ckpt, data[steps:], logged_sigma(seed)


def resume(ckpt, data, awl):
    ckpt = copy.deepcopy(ckpt)  # Adam's load_state_dict keeps the tensors it is given and updates them in place
    model = Heads()
    model.load_state_dict(ckpt["model"])
    awl.load_state_dict(ckpt["awl"])
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": awl.parameters(), "weight_decay": 0}], lr=1e-2)
    opt.load_state_dict(ckpt["opt"])
    run(model, awl, opt, data)
    return awl.sigma.tolist()


def test_resuming_a_seed_run_sigma_mode_is_exact_and_default_mode_warns():
    ckpt, data, seed_next = seed_run_with_checkpoint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sigma mode: nothing to convert, nothing to warn about
        assert resume(ckpt, data, AutomaticWeightedLoss(2, parameterization="sigma")) == [abs(s) for s in seed_next]
    with pytest.warns(UserWarning, match=r"Converted checkpoint key `params` \(σ\) into `log_var`.*optimizer state.*"
                      r"parameterization='sigma'"):
        wrong = resume(ckpt, data, AutomaticWeightedLoss(2))
    # the warning is about a real error: the seed's Adam moments for σ applied to log σ²
    assert max(abs(a - b) for a, b in zip(wrong, seed_next)) > 1e-3
    assert (round(wrong[1], 4), round(abs(seed_next[1]), 4)) == (1.1877, 1.1913)  # quoted in the README


def test_logging_awl_params_in_both_parameterizations():
    for model, awl in three(3, n_heads=3):
        opt = torch.optim.Adam([{"params": model.parameters()}, {"params": awl.parameters(), "lr": 0.05, "weight_decay": 0}])
        run(model, awl, opt, batches(10, n_heads=3))
        sigma = awl.params.detach().abs() if isinstance(awl, SeedAWL) else awl.sigma
        torch.testing.assert_close(awl.params.detach().abs(), sigma)
        assert [round(v, 6) for v in awl.params.data.abs().tolist()] == [round(v, 6) for v in sigma.tolist()]
        assert f"{awl.params[0].item():.4f}" == f"{sigma[0].item():.4f}"


# ----------------------------------------------------------------- item by item
def test_params_is_read_only_sigma_in_the_default_parameterization():
    awl = AutomaticWeightedLoss(2)
    with torch.no_grad():
        awl.log_var.copy_(torch.log(torch.tensor([0.25, 4.0])))
    torch.testing.assert_close(awl.params, torch.tensor([0.5, 2.0]))
    assert not awl.params.requires_grad and "params" not in awl.state_dict()
    with pytest.raises(AttributeError, match="read-only"):
        awl.params = torch.ones(2)
    with pytest.raises(KeyError):
        awl.params = nn.Parameter(torch.ones(2))
    sigma = AutomaticWeightedLoss(2, parameterization="sigma")
    assert isinstance(sigma.params, nn.Parameter) and [n for n, _ in sigma.named_parameters()] == ["params"]
    for obj in (copy.deepcopy(awl), copy.deepcopy(sigma)):
        assert obj.params.shape == (2,)


def test_module_on_cpu_losses_on_another_device_compute_there_like_the_seed():
    """The meta device stands in for CUDA: the seed works there (0-dim CPU σ's combine with meta tensors)."""
    losses = [torch.tensor(0.7, device="meta"), torch.tensor(3.0, device="meta")]
    assert SeedAWL(2)(*losses).device.type == "meta"  # the seed's own behaviour
    for mode in ("log_variance", "sigma"):
        awl = AutomaticWeightedLoss(2, parameterization=mode)
        awl.check_finite = False  # the value check reads the losses from the host, which meta cannot
        with pytest.warns(UserWarning, match=r"Losses are on meta but AutomaticWeightedLoss's parameters are on cpu"
                          r".*awl.to\('meta'\)"):
            out = awl(*losses)
        assert out.device.type == "meta" and awl.weights.device.type == "meta"
        (param,) = awl.parameters()
        assert param.device.type == "cpu"
        # the gradient path leads back to the CPU parameter
        seen, stack, found = set(), [out.grad_fn], False
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            found |= getattr(fn, "variable", None) is param
            stack.extend(f for f, _ in fn.next_functions)
        assert found
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            awl(*losses)
    with pytest.raises(ValueError, match="Losses are on meta but UncertaintyWeighting's parameters are on cpu"):
        UncertaintyWeighting(2)(torch.ones(2, device="meta"))  # other methods: a clear error, unchanged


def test_more_losses_than_num_is_an_error_that_names_the_seed():
    with pytest.raises(ValueError, match=r"Expected 2 losses.*got 3.*seed raised an IndexError.*AutomaticWeightedLoss\(3\)"):
        AutomaticWeightedLoss(2)(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))


@pytest.mark.parametrize("form", ["varargs", "list", "tensor", "numbers"])
def test_fewer_losses_every_call_form_warns_once(form):
    awl = AutomaticWeightedLoss(3)
    l1, l2 = torch.tensor(0.5), torch.tensor(2.0)
    args = {"varargs": (l1, l2), "list": ([l1, l2],), "tensor": (torch.stack([l1, l2]),), "numbers": (0.5, 2.0)}[form]
    with pytest.warns(UserWarning, match="got 2 losses"):
        out = awl(*args)
    assert out.item() == pytest.approx(seed_formula([1, 1], [0.5, 2.0]), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        awl(*args)
        awl(l1, l2, torch.tensor(1.0))


@pytest.mark.parametrize("mask", [None, True])
def test_sigma_mode_with_a_loss_exactly_zero(mask):
    """Default (mask off in sigma mode): the seed bit for bit. With `mask_zero_losses=True`: σ frozen."""
    seed = SeedAWL(2)
    awl = AutomaticWeightedLoss(2, parameterization="sigma", **({} if mask is None else {"mask_zero_losses": mask}))
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (seed, awl)]
    for step in range(50):
        losses = [torch.tensor(0.8), torch.tensor(0.0 if step % 2 else 1.5)]
        for m, o in zip((seed, awl), opts):
            o.zero_grad()
            m(*losses).backward()
            o.step()
        if mask is None:
            assert torch.equal(seed.params, awl.params)
    if mask:
        assert not torch.equal(seed.params, awl.params)


def test_zero_sigma_seed_checkpoint_is_refused_and_the_recipe_works():
    state = {"params": torch.tensor([0.0, 0.9])}
    for mode in ("log_variance", "sigma"):
        with pytest.raises(ValueError, match=r"σ is 0 or not finite for task\(s\) \[0\].*issue #2"):
            AutomaticWeightedLoss(2, parameterization=mode).load_state_dict(state)
    sigma = state["params"]
    sigma[(sigma == 0) | ~sigma.isfinite()] = 1.0  # the recipe of the message
    with pytest.warns(UserWarning, match="Converted"):
        awl = AutomaticWeightedLoss(2)
        awl.load_state_dict(state)
    assert torch.isfinite(awl(torch.tensor(1.0), torch.tensor(1.0)))
    with pytest.raises(ValueError, match=r"`log_var` must be finite"):
        UncertaintyWeighting(2).load_state_dict({"log_var": torch.tensor([-math.inf, 0.0])})


def test_strict_errors_say_what_the_seed_did_and_the_recipes_work():
    awl, seed = AutomaticWeightedLoss(2, parameterization="sigma"), SeedAWL(2)
    l1 = torch.tensor(0.7, requires_grad=True)
    # a float mixed with tensors
    with pytest.raises(TypeError, match=r"seed accepted it as a constant.*loss.new_tensor\(value\)"):
        awl(l1, 2.5)
    torch.autograd.grad(awl(l1, l1.new_tensor(2.5)), awl.params)[0].equal(
        torch.autograd.grad(seed(l1, 2.5), seed.params)[0]
    ) or pytest.fail("the recipe must give the seed's σ gradient")
    # per-sample losses
    per_sample = torch.rand(8) + 0.1
    with pytest.raises(ValueError, match=r"seed broadcast it.*awl\(loss1.mean\(\), loss2.mean\(\)\)"):
        awl(per_sample, per_sample * 2)
    torch.testing.assert_close(awl(per_sample.mean(), (per_sample * 2).mean()), seed(per_sample, per_sample * 2).mean())
    with pytest.raises(ValueError, match=r"one task's per-sample loss.*awl\(loss.mean\(\)\)"):
        AutomaticWeightedLoss(1)(per_sample)
    # a negative loss
    for w in (awl, AutomaticWeightedLoss(2)):
        with pytest.raises(ValueError, match=r"must be >= 0.*seed trained on it.*check_finite = False"):
            w(l1, torch.tensor(-0.3))
            w.verify()  # the deferred check of that call (default), read here
    awl.check_finite = False
    assert awl(l1, torch.tensor(-0.3)).item() == seed(l1, torch.tensor(-0.3)).item()


def test_factory_by_name_like_the_clients():
    module = importlib.import_module("awloss")
    awl = getattr(module, "AutomaticWeightedLoss")(num=3)
    assert awl.num_tasks == 3 and awl.params.tolist() == [1.0, 1.0, 1.0]


def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "seed_parameterization.py"
    spec = importlib.util.spec_from_file_location("seed_parameterization", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speed_factors_and_weight_decay_numbers_quoted_in_the_readme():
    bench = _benchmark()
    for loss in (0.1, 10.0):
        assert bench.first_step("sigma", "adam", 1e-3, loss) / bench.first_step("log_variance", "adam", 1e-3, loss) == (
            pytest.approx(2.0, rel=1e-2)
        )
        assert bench.first_step("sigma", "sgd", 1e-3, loss) / bench.first_step("log_variance", "sgd", 1e-3, loss) == (
            pytest.approx(4.0, rel=1e-2)
        )
    a, b = bench.steps_to_half("sigma", "adam", 1e-3, 0.1, 2000), bench.steps_to_half("log_variance", "adam", 1e-3, 0.1, 2000)
    assert (a, b) == (261, 644)
    assert bench.decayed_weight("log_variance", 0.01, 0.0) == pytest.approx(6.8255, abs=1e-4)
    assert bench.decayed_weight("log_variance", 0.01, 0.01) == pytest.approx(5.6722, abs=1e-4)
    assert bench.decayed_weight("sigma", 0.01, 0.01) == pytest.approx(6.8444, abs=1e-4)
    assert bench.decayed_weight("log_variance", 0.01, 0.1) == pytest.approx(2.3255, abs=1e-4)
    assert bench.decayed_weight("sigma", 0.01, 0.1) == pytest.approx(7.0123, abs=1e-4)
    assert bench.decayed_weight("sigma", 0.0, 1e-4) == math.inf and bench.decayed_weight("log_variance", 0.0, 1e-4) == 0.5


@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float64), (torch.bfloat16, torch.float16), (torch.float16, torch.float32)])
def test_sigma_mode_bit_identical_for_any_loss_dtype(dtypes):
    """The σ's stay float32 and the products are formed as in the seed (no promotion of σ first).

    Not covered, documented instead: float32 and float64 losses mixed in one call, which the seed sums in
    float32 (its in-place ``+=`` keeps the first term's dtype) and we in float64."""
    seed, awl = SeedAWL(2), AutomaticWeightedLoss(2, parameterization="sigma")
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (seed, awl)]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        raw = [torch.rand((), generator=g) * 3 for _ in dtypes]
        outs = []
        for m, o in zip((seed, awl), opts):
            losses = [r.to(d).requires_grad_() for r, d in zip(raw, dtypes)]
            out = m(*losses)
            o.zero_grad()
            out.backward()
            o.step()
            outs.append((out.detach(), [l.grad for l in losses]))
        assert torch.equal(outs[0][0], outs[1][0]) and outs[0][0].dtype == outs[1][0].dtype
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))
        assert torch.equal(seed.params, awl.params)


def test_awl_as_a_submodule_of_the_model_and_its_prefixed_seed_checkpoint():
    """mT-ICL / fairseq style: `self.loss_weight = AutomaticWeightedLoss(2)` inside the model, so
    `model.parameters()` holds σ (with the model's weight decay) and the checkpoint key is prefixed."""
    import pickle

    class Net(nn.Module):
        def __init__(self, awl):
            super().__init__()
            self.body, self.loss_weight = Heads(), awl

        def forward(self, x, y):
            return self.loss_weight(*task_losses(self.body, x, y))

    torch.manual_seed(0)
    seed_net = Net(SeedAWL(2))
    nets = [seed_net, Net(AutomaticWeightedLoss(2, parameterization="sigma")), Net(AutomaticWeightedLoss(2))]
    for net in nets[1:]:
        net.body.load_state_dict(seed_net.body.state_dict())
    opts = [torch.optim.SGD(n.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-3) for n in nets]
    for x, y in batches(15):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x, y).backward()
            opt.step()
    assert torch.equal(nets[0].loss_weight.params, nets[1].loss_weight.params)
    state = seed_net.state_dict()
    assert "loss_weight.params" in state
    for mode in ("sigma", "log_variance"):
        fresh = Net(AutomaticWeightedLoss(2, parameterization=mode))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fresh.load_state_dict(state)
        assert (len(caught) == 1) == (mode == "log_variance")
        torch.testing.assert_close(fresh.loss_weight.sigma, seed_net.loss_weight.params.detach().abs())
        clone = pickle.loads(pickle.dumps(fresh.loss_weight))
        assert torch.equal(clone.params, fresh.loss_weight.params)
