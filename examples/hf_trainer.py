"""A two-task BERT trained with Hugging Face's Trainer, the task losses weighed by awloss (CPU, built from code).

    python examples/hf_trainer.py [OUTPUT_DIR]

The model is a tiny BertModel from a BertConfig (nothing is downloaded) with a classification head and a
regression head; `forward` returns {"task_losses": {...}}. MultiTaskTrainer puts the weighting's parameters in
their own optimizer group (lr 0.025, no weight decay), logs weight/<task> and sigma/<task> with the Trainer's
logs, and saves and restores the weighting's state with every checkpoint.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from torch import nn
from transformers import BertConfig, BertModel, TrainingArguments

import awloss
from awloss.integrations.transformers import MultiTaskTrainer


class TwoTaskBert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = BertModel(config)
        self.cls = nn.Linear(16, 3)
        self.reg = nn.Linear(16, 1)

    def forward(self, input_ids, attention_mask, labels, target):
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return {"task_losses": {
            "cls": nn.functional.cross_entropy(self.cls(pooled), labels),
            "reg": nn.functional.mse_loss(self.reg(pooled).squeeze(-1), target),
        }}


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.label = self.ids[:, 1] % 3
        self.target = 10.0 * self.ids[:, 2].float() / 50

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "label": self.label[i], "target": self.target[i]}


def make_trainer(output_dir: str, max_steps: int) -> MultiTaskTrainer:
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=8,
                             learning_rate=1e-3, weight_decay=0.01, logging_steps=1, save_steps=2,
                             report_to=[], use_cpu=True, disable_tqdm=True, remove_unused_columns=False)
    weighting = awloss.UncertaintyWeighting(2, task_names=["cls", "reg"], task_types=["classification", "regression"])
    return MultiTaskTrainer(model=TwoTaskBert(), args=args, train_dataset=Toy(), weighting=weighting)


def main(output_dir: str) -> tuple[MultiTaskTrainer, MultiTaskTrainer]:
    full = make_trainer(output_dir, max_steps=4)    # checkpoints at steps 2 and 4
    full.train()
    print("log variances after 4 steps:", full.weighting.log_var.tolist())
    resumed = make_trainer(output_dir, max_steps=4)
    resumed.train(resume_from_checkpoint=f"{output_dir}/checkpoint-2")  # the weighting's state comes back too
    print("resumed from step 2, after 4:", resumed.weighting.log_var.tolist())
    print("last logs:", {k: round(v, 4) for k, v in resumed.state.log_history[-2].items() if "/" in k})
    return full, resumed


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
