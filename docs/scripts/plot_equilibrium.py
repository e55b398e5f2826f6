"""Plot the equilibrium weights of uncertainty weighting; writes docs/assets/equilibrium_weights.png.

    PYTHONPATH=src python docs/scripts/plot_equilibrium.py   # needs matplotlib (pip install "awloss[docs]")

Curves: the closed form ``UncertaintyWeighting.equilibrium_weight``. Markers: the weight that Adam actually
reaches from σ = 1 on a constant loss L with the module itself (the formula is checked, not just drawn).
"""

from __future__ import annotations

from pathlib import Path

import torch

from awloss import UncertaintyWeighting

OUT = Path(__file__).resolve().parents[1] / "assets" / "equilibrium_weights.png"
VARIANTS = [  # label, regularizer, task type, colour, line style
    ("Kendall (\"log\"), regression and classification", "log", "regression", "#3f51b5", "-"),
    ("Liebel & Körner (\"log1p\", AutomaticWeightedLoss), regression", "log1p", "regression", "#e65100", "-"),
    ("Liebel & Körner (\"log1p\"), classification", "log1p", "classification", "#e65100", "--"),
]


def trained_weight(loss: float, regularizer: str, task_type: str, steps: int = 3000) -> float:
    uw = UncertaintyWeighting(1, regularizer=regularizer, task_types=task_type)
    opt = torch.optim.Adam(uw.param_groups(lr=0.05))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.999)
    L = torch.tensor([loss])
    for _ in range(steps):
        opt.zero_grad()
        uw(L).backward()
        opt.step()
        sched.step()
    uw(L)
    return float(uw.weights[0])


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = torch.logspace(-4, 2, 200).tolist()
    marks = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for label, reg, tt, color, ls in VARIANTS:
        w = [UncertaintyWeighting.equilibrium_weight(L, regularizer=reg, task_type=tt) for L in losses]
        ax1.loglog(losses, w, ls, color=color, label=label)
        ax2.semilogx(losses, [wi * L for wi, L in zip(w, losses)], ls, color=color)
        if ls == "-":
            tw = [trained_weight(L, reg, tt) for L in marks]
            ax1.loglog(marks, tw, "o", color=color, mfc="none", ms=7)
            ax2.semilogx(marks, [wi * L for wi, L in zip(tw, marks)], "o", color=color, mfc="none", ms=7)
    ax1.loglog(losses, [1.0] * len(losses), ":", color="gray", label="equal weighting (sum)")
    ax2.semilogx(losses, losses, ":", color="gray")
    ax1.set(xlabel="task loss L (held constant)", ylabel="equilibrium weight w*",
            title="Weight at the optimum over σ")
    ax2.set(xlabel="task loss L (held constant)", ylabel="weighted loss w*·L", ylim=(0, 1.6),
            title="How much the task counts in the total")
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
    ax1.legend(fontsize=8, loc="lower left")
    ax1.text(1.5, 300, "circles: weight reached\nby Adam from σ = 1\nwith the module", fontsize=8, color="#444")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
