"""Lightning strategy="ddp" on 2 CPU processes: ``python _lightning_ddp.py OUT_DIR`` (re-launched per rank)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as H  # noqa: E402
import lightning as L  # noqa: E402

import awloss  # noqa: E402
from awloss.integrations.lightning import MultiTaskMixin  # noqa: E402


class LitMTL(MultiTaskMixin, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = H.TinyMTL()
        self.weighting = H.make_weighting("uw")

    def task_losses(self, batch, batch_idx):
        x, y = batch
        return H.task_losses(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class LitAgg(MultiTaskMixin, L.LightningModule):
    """Gradient level: manual optimisation with awloss.backward under Lightning's DDP."""

    def __init__(self):
        super().__init__()
        self.net = H.TinyMTL()
        self.aggregator = awloss.get("upgrad")

    def task_losses(self, batch, batch_idx):
        x, y = batch
        return H.task_losses(self.net(x), y)

    def shared_parameters(self):
        return self.net.trunk.parameters()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main():
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    x, y = H.make_batch(0, 48, dtype=torch.float32)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    model = LitMTL()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    agg_model = LitAgg()
    agg_trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    agg_trainer.fit(agg_model, data)
    torch.save({"weights": model.weighting.weights, "state": model.weighting.state_dict(),
                "steps": trainer.global_step, "agg_model": agg_model.state_dict(),
                "agg_steps": agg_trainer.global_step}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
