"""Growth inside training frameworks (issue 15, item 4): ``transformers.Trainer`` with
``fxgrow.integrations.hf.GrowCallback`` and Lightning with
``fxgrow.integrations.lightning.GrowCallback``: 20 optimizer steps, growth at step 10; the run
ends with the bigger model, every trainable parameter in the optimizer with student-shaped
state, the scheduler carried on, and the loss right after growth equal to the loss right before
on the same batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from fxgrow.integrations.common import Trigger

D, C, N = 16, 4, 160


class Classifier(nn.Module):
    """A residual MLP with dropout that returns its loss, as Trainer models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(D, 32)
        self.blocks = nn.Sequential(*[Residual() for _ in range(2)])
        self.head = nn.Linear(32, C)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        logits = self.head(self.blocks(F.relu(self.embed(x))))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(32, 64), nn.Linear(64, 32), nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(F.relu(self.fc1(x))))


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, D, generator=g)
        self.y = (self.x[:, :C]).argmax(1)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


def check_optimizer(model: nn.Module, optimizer) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)
    held = {id(p) for g in inner.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    for g in inner.param_groups:
        for p in g["params"]:
            for key in ("exp_avg", "exp_avg_sq"):
                assert inner.state[p][key].shape == p.shape


def test_hf_trainer_grows_at_step_10(tmp_path):
    transformers = pytest.importorskip("transformers")
    from fxgrow.integrations.hf import GrowCallback

    torch.manual_seed(0)
    model = Classifier()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        warmup_steps=2,
        lr_scheduler_type="linear",
        report_to=[],
        logging_steps=5,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    cb = GrowCallback(at_step=10, width=2, blocks={"blocks": 3})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[cb])
    cb.attach(trainer)
    n_before = sum(p.numel() for p in model.parameters())
    result = trainer.train()
    assert trainer.state.global_step == 20 and result.global_step == 20
    (event,) = cb.events
    assert event.step == 10 and event.reason == "step 10"
    assert event.loss_after == pytest.approx(event.loss_before, rel=1e-5)
    assert event.params_before == n_before and event.params_after > 3 * n_before
    assert trainer.model is model and isinstance(model, torch.fx.GraphModule)
    assert model.get_parameter("embed.weight").shape == (64, D)
    assert model.get_parameter("blocks.2.fc1.weight").shape == (128, 64)
    assert sum(p.numel() for p in model.parameters()) == event.params_after
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    check_optimizer(model, trainer.optimizer)
    # the linear schedule went on where it was: at step 20 of 20 the rate is 0
    assert trainer.lr_scheduler.optimizer is trainer.optimizer
    assert trainer.lr_scheduler.last_epoch == 20
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


def test_hf_trainer_gpt2_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    from fxgrow.integrations.hf import GrowCallback

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        vocab_size=64,
        n_positions=32,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (64, 12), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": r, "labels": r} for r in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=8,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    cb = GrowCallback(at_step=10, width=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    cb.attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 20
    assert type(trainer.model) is transformers.GPT2LMHeadModel  # the grown model, its own class
    assert trainer.model.config.n_embd == 64
    event = cb.events[0]
    assert event.loss_before == pytest.approx(event.loss_after, rel=1e-5)
    check_optimizer(trainer.model, trainer.optimizer)


def test_hf_trainer_llama_to_config(tmp_path):
    """The growth given as a target config: wider and deeper in one step of a Trainer run."""
    transformers = pytest.importorskip("transformers")
    from fxgrow.integrations.hf import GrowCallback

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_cache=False,
    )
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 64, (48, 12), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": r, "labels": r} for r in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=8,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    cb = GrowCallback(at_step=6, to_config={"intermediate_size": 128, "num_hidden_layers": 3})
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    cb.attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 12
    assert type(trainer.model) is transformers.LlamaForCausalLM
    assert trainer.model.config.num_hidden_layers == 3
    assert trainer.model.config.intermediate_size == 128
    event = cb.events[0]
    assert event.loss_before == pytest.approx(event.loss_after, rel=1e-5)
    check_optimizer(trainer.model, trainer.optimizer)


def test_trigger_plateau_and_bad_options():
    t = Trigger(monitor="loss", patience=2)
    for v in (1.0, 0.9, 0.95, 0.91):
        t.observe({"loss": v})
        assert t.due(0) is None or v == 0.91
    assert t.due(0) == "loss did not improve for 2 observations"
    with pytest.raises(fxgrow.InputError, match="exactly one of at_step"):
        Trigger()
    with pytest.raises(fxgrow.InputError, match="exactly one of at_step"):
        Trigger(at_step=3, monitor="loss")
    with pytest.raises(fxgrow.InputError, match="positive integer"):
        Trigger(at_step=0)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(D, 32)
        self.blocks = nn.Sequential(*[Residual() for _ in range(2)])
        self.head = nn.Linear(32, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(F.relu(self.embed(x))))


def test_lightning_grows_at_step_10(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from fxgrow.integrations.lightning import GrowCallback

    class Task(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.AdamW(
                [
                    {
                        "params": [p for n, p in self.named_parameters() if n.endswith("weight")],
                        "weight_decay": 0.01,
                    },
                    {
                        "params": [p for n, p in self.named_parameters() if n.endswith("bias")],
                        "weight_decay": 0.0,
                    },
                ],
                lr=3e-3,
            )
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    torch.manual_seed(0)
    data = Data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x, data.y), batch_size=16, shuffle=True
    )
    task = Task()
    n_before = sum(p.numel() for p in task.net.parameters())
    cb = GrowCallback("net", at_step=10, width=2, blocks={"blocks": 3})
    trainer = L.Trainer(
        max_steps=20,
        callbacks=[cb],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(task, loader)
    assert trainer.global_step == 20
    (event,) = cb.events
    assert event.step == 10 and event.loss_after == pytest.approx(event.loss_before, rel=1e-5)
    assert event.params_before == n_before
    assert isinstance(task.net, torch.fx.GraphModule)
    assert task.net.get_parameter("blocks.2.fc1.weight").shape == (128, 64)
    (opt,) = trainer.optimizers
    check_optimizer(task.net, opt)
    # two groups kept: new biases joined the no-decay group, new weights the decay group
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in task.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert "net.blocks.2.fc1.bias" in {names[id(p)] for p in no_decay["params"]}
    # StepLR went on: halved at steps 5, 10, 15, 20
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(3e-3 / 16)


def test_hf_trainer_grows_on_plateau_new_blocks_warmup(tmp_path):
    """``monitor="loss"``: growth when the logged loss stops improving; only the new blocks
    train afterwards (LLaMA-Pro), with a re-warmed schedule."""
    transformers = pytest.importorskip("transformers")
    from fxgrow.integrations.hf import GrowCallback

    torch.manual_seed(0)
    model = Classifier()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=30,
        per_device_train_batch_size=16,
        learning_rate=3e-2,
        lr_scheduler_type="constant",
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    cb = GrowCallback(
        monitor="loss",
        patience=2,
        blocks={"blocks": 4},
        trainable="new_blocks",
        schedule="warmup",
        warmup_steps=5,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[cb])
    cb.attach(trainer)
    trainer.train()
    (event,) = cb.events
    assert event.reason == "loss did not improve for 2 observations" and event.step < 30
    assert event.loss_after == pytest.approx(event.loss_before, rel=1e-5)
    inner = trainer.optimizer.optimizer
    held = {id(p) for g in inner.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        new = n.startswith(("blocks.2.", "blocks.3."))
        assert (id(p) in held) == new and p.requires_grad == new, n
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert min(lrs) < 3e-2 and lrs[-1] == pytest.approx(3e-2)  # ramped back up to the peak
