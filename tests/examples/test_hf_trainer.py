"""examples/hf_trainer.py and awloss.integrations.transformers.MultiTaskTrainer: groups, logs, resume."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("transformers")

import awloss  # noqa: E402
from awloss.integrations.transformers import WEIGHTING_FILE, MultiTaskTrainer  # noqa: E402

from ._load import load  # noqa: E402

hf = load("hf_trainer")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    full, resumed = hf.main(str(out))
    return out, full, resumed


def test_resume_continues_exactly_as_the_uninterrupted_run(runs) -> None:
    # Fails if the weighting's state is not restored, or if its gradients accumulate across steps (the
    # Trainer's model.zero_grad() does not reach a weighting that lives outside the model).
    _, full, resumed = runs
    assert not torch.equal(full.weighting.log_var, torch.zeros(2)), "the weighting never moved"
    assert torch.equal(full.weighting.log_var, resumed.weighting.log_var)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name


def test_each_checkpoint_holds_the_weighting_state(runs) -> None:
    out, full, _ = runs
    for step in (2, 4):
        state = torch.load(os.path.join(out, f"checkpoint-{step}", WEIGHTING_FILE), weights_only=True)
        assert set(state) >= {"log_var"}
    assert torch.equal(state["log_var"], full.weighting.log_var)


def test_weighting_has_its_own_group_without_weight_decay(runs) -> None:
    _, full, _ = runs
    ids = {id(p) for p in full.weighting.parameters()}
    own = [g for g in full.optimizer.param_groups if any(id(p) in ids for p in g["params"])]
    assert len(own) == 1 and {id(p) for p in own[0]["params"]} == ids
    assert own[0]["weight_decay"] == 0.0 and own[0]["initial_lr"] == pytest.approx(0.025)
    others = [g for g in full.optimizer.param_groups if g is not own[0]]
    assert any(g["weight_decay"] == 0.01 for g in others), "the model keeps its weight decay"


def test_weights_reach_the_trainer_logs(runs) -> None:
    _, full, _ = runs
    train_logs = [h for h in full.state.log_history if "loss" in h]
    assert len(train_logs) == 4
    for h in train_logs:
        assert {"weight/cls", "weight/reg", "sigma/cls", "sigma/reg"} <= set(h)
    assert train_logs[0]["weight/cls"] == pytest.approx(1.0) and train_logs[0]["weight/reg"] == pytest.approx(0.5)


def test_evaluation_reports_the_plain_sum_and_leaves_the_weighting_alone(tmp_path) -> None:
    trainer = hf.make_trainer(str(tmp_path), max_steps=1)
    trainer.train()
    before = {k: v.clone() for k, v in trainer.weighting.state_dict().items()}
    metrics = trainer.evaluate(eval_dataset=hf.Toy(16))
    model = trainer.model.eval()
    batch = torch.utils.data.default_collate([hf.Toy(16)[i] for i in range(8)])
    batch["labels"] = batch.pop("label")
    with torch.no_grad():
        losses = model(**batch)["task_losses"]
    assert metrics["eval_loss"] == pytest.approx(float(sum(losses.values())), rel=0.2)  # two batches averaged
    for k, v in trainer.weighting.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_clear_errors(tmp_path) -> None:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], use_cpu=True)
    with pytest.raises(TypeError, match="`weighting` must be an awloss Weighting"):
        MultiTaskTrainer(model=hf.TwoTaskBert(), args=args, weighting=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="`weighting_lr` must be > 0, got 0"):
        MultiTaskTrainer(model=hf.TwoTaskBert(), args=args, weighting=awloss.get("uw", num_tasks=2), weighting_lr=0)

    class NoTaskLosses(hf.TwoTaskBert):
        def forward(self, **kw):
            return {"loss": sum(super().forward(**kw)["task_losses"].values())}

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], use_cpu=True,
                             remove_unused_columns=False, per_device_train_batch_size=8)
    trainer = MultiTaskTrainer(model=NoTaskLosses(), args=args, train_dataset=hf.Toy(),
                               weighting=awloss.get("uw", num_tasks=2))
    with pytest.raises(KeyError, match="has no `task_losses`"):
        trainer.train()
    os.makedirs(tmp_path / "checkpoint-1")
    with pytest.raises(FileNotFoundError, match=WEIGHTING_FILE):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
