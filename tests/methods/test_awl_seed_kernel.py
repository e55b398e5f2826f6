"""``AutomaticWeightedLoss(parameterization="sigma")`` runs the seed's objective as one fused node
(``weighting/_awl_kernel.py``): its value and its gradients w.r.t. σ and each loss must be the seed's bit for
bit. The oracle is the seed's loop, written out as its README gives it, differentiated by autograd."""

from __future__ import annotations

import math

import pytest
import torch

from awloss import AutomaticWeightedLoss
from awloss.weighting._awl_kernel import seed_sum


def seed(params, losses, nums):
    """The seed's forward: ``loss_sum = 0; loss_sum += num / (p[i] ** 2) * loss + torch.log(1 + p[i] ** 2)``."""
    loss_sum = 0
    for i, loss in enumerate(losses):
        loss_sum += nums[i] / (params[i] ** 2) * loss + torch.log(1 + params[i] ** 2)
    return loss_sum


def bits(t):
    """The bit pattern (NaN payloads aside), so that a -0.0 / +0.0 or a last-bit difference shows."""
    t = t.detach()
    as_int = t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)
    return torch.where(torch.isnan(t), torch.zeros_like(as_int), as_int)


def draw(g, T, dtype, scale):
    sigma = torch.exp(torch.randn(T, generator=g, dtype=torch.float64) * scale)
    sigma = sigma * torch.where(torch.rand(T, generator=g) < 0.2, -1.0, 1.0).double()  # the seed's σ can go < 0
    loss = torch.rand(T, generator=g, dtype=torch.float64) * torch.exp(torch.randn(T, generator=g, dtype=torch.float64) * scale)
    loss = torch.where(torch.rand(T, generator=g) < 0.1, torch.zeros_like(loss), loss)  # the seed's issue #2
    return sigma.to(dtype), loss


def compare(T, sigma, raw, *, sigma_dtype, loss_dtype, types=None, grad=None, given=None, device="cpu"):
    types = types or ["regression"] * T
    nums = [0.5 if t == "regression" else 1.0 for t in types]
    k = given or T
    awl = AutomaticWeightedLoss(T, parameterization="sigma", task_types=types).to(device, sigma_dtype)
    sigma, raw = sigma.to(device), raw.to(device)
    awl.check = False  # the values may be inf/NaN on purpose (σ = 0 from an overflow, huge losses)
    with torch.no_grad():
        awl.params.copy_(sigma)
    ref = torch.nn.Parameter(sigma.clone())
    runs = []
    for fn, p in ((lambda ls: seed(ref, ls, nums), ref), (lambda ls: awl(*ls), awl.params)):
        losses = [x.to(loss_dtype).requires_grad_() for x in raw[:k]]
        out = fn(losses)
        out.backward(grad if grad is None else torch.tensor(grad, dtype=out.dtype, device=device))
        runs.append((out, p.grad.clone(), [x.grad for x in losses]))
        if p is awl.params:
            assert out.grad_fn is not None and "SeedObjective" in type(out.grad_fn).__name__
    (v0, p0, l0), (v1, p1, l1) = runs
    assert v0.dtype == v1.dtype
    assert torch.equal(bits(v0), bits(v1)), (v0, v1)
    assert torch.equal(bits(p0), bits(p1)), (p0, p1)
    for a, b in zip(l0, l1):
        assert a.dtype == b.dtype and torch.equal(bits(a), bits(b)), (a, b)


@pytest.mark.parametrize("sigma_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.5, 3.0, 25.0])  # 25: σ², 1/σ² and the losses over/underflow (subnormals, inf)
def test_bit_identical_to_the_seed_on_random_inputs(sigma_dtype, loss_dtype, scale):
    g = torch.Generator().manual_seed(int(scale * 10))
    for T in range(1, 33):
        for _ in range(4):
            sigma, loss = draw(g, T, sigma_dtype, scale)
            compare(T, sigma, loss, sigma_dtype=sigma_dtype, loss_dtype=loss_dtype)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bit_identical_to_the_seed_on_cuda(dtype):
    """The same on CUDA (its kernels, and the sum added one by one): unrun so far, no GPU here."""
    g = torch.Generator().manual_seed(2)
    for T in range(1, 33):
        for scale in (0.5, 3.0, 25.0):
            sigma, loss = draw(g, T, dtype, scale)
            compare(T, sigma, loss, sigma_dtype=dtype, loss_dtype=dtype, device="cuda")


@pytest.mark.parametrize("sigma_dtype", [torch.float32, torch.float64])
def test_bit_identical_with_mixed_task_types_a_scaled_gradient_and_fewer_losses(sigma_dtype):
    g = torch.Generator().manual_seed(1)
    for T in (1, 2, 3, 5, 10, 17, 32):
        for grad in (None, 3.7, -1e-30, 1e30):
            sigma, loss = draw(g, T, sigma_dtype, 3.0)
            types = ["classification" if torch.rand((), generator=g) < 0.5 else "regression" for _ in range(T)]
            compare(T, sigma, loss, sigma_dtype=sigma_dtype, loss_dtype=torch.float32, types=types, grad=grad)
            if T > 1:  # `AutomaticWeightedLoss(T)` given k < T losses uses σ_1..σ_k, like the seed
                with pytest.warns(UserWarning, match="got"):
                    compare(T, sigma, loss, sigma_dtype=sigma_dtype, loss_dtype=torch.float32, grad=grad, given=T - 1)


def test_special_values():
    big = 1.8e19  # σ² overflows float32
    for sigma in ([0.0, 1.0], [1e-30, 1.0], [big, -big], [math.inf, 1.0], [math.nan, 2.0], [-3.0, 5e-20]):
        for loss in ([0.0, 1.0], [1e-45, 3e38], [math.inf, 0.5], [2.0, math.nan]):
            for dt in (torch.float32, torch.float64):
                compare(2, torch.tensor(sigma, dtype=dt), torch.tensor(loss, dtype=torch.float64), sigma_dtype=dt,
                        loss_dtype=dt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_seeds_order_of_summation(dtype):
    """`seed_sum` adds left to right from 0 like the seed's loop; `torch.sum` does not (it pairs the terms,
    in vector lanes): this is why the kernel does not use it."""
    g = torch.Generator().manual_seed(0)
    differs = 0
    for T in (1, 2, 3, 5, 10, 17, 32, 100):
        index = torch.zeros(T, dtype=torch.long)
        for _ in range(50):
            terms = torch.exp(torch.randn(T, generator=g, dtype=dtype) * 3)
            loop = 0
            for t in terms:
                loop += t
            assert torch.equal(bits(seed_sum(terms, index)), bits(loop))
            assert torch.equal(bits(seed_sum(terms, None)), bits(loop))  # the accelerators' path
            differs += not torch.equal(terms.sum(), loop)
    assert differs > 0
