"""The phase loop's numerical safety: a non-finite loss rolls back to the epoch start and lowers the
learning rate once; a second one stops the run with a clear message. Also: the lowered rate survives
a checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.config import TrainConfig
from core.events import Control, NullObserver
from core.files import safe_load
from core.train.loop import NAN_LR_FACTOR, Diverged, Phase, run_phase
from core.train.metrics_log import MetricsLog


class Loader:
    def __init__(self, steps: int):
        g = torch.Generator().manual_seed(0)
        self.batches = [{"image": torch.randn(4, 3, generator=g), "label": torch.randn(4, 1, generator=g),
                         "task": torch.zeros(4, dtype=torch.long)} for _ in range(steps)]
        self.batch_sampler = SimpleNamespace(set_epoch=lambda epoch: None)
        self.dataset = None

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class Log(NullObserver):
    def __init__(self):
        self.lines = []

    def on_log(self, message):
        self.lines.append(message)


def make_phase(nan_at: set[int], epochs: int = 2, steps: int = 5):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    calls = {"n": 0}

    def compute_loss(batch):
        calls["n"] += 1
        loss = nn.functional.mse_loss(model(batch["image"]), batch["label"])
        if calls["n"] in nan_at:
            return loss * float("nan"), {}
        return loss, {"t": (float(loss.detach()) * 4, 4)}

    phase = Phase(name="decompose", modules={"m": model}, params=list(model.parameters()),
                  compute_loss=compute_loss, loader=Loader(steps), epochs=epochs, lr=0.1)
    return phase, model, calls


def run(phase, tmp_path, observer):
    train = TrainConfig(epochs=phase.epochs, lr=phase.lr, warmup_epochs=0, schedule="constant", log_every=1)
    run_phase(phase, train, seed=0, device=torch.device("cpu"), checkpoint_path=tmp_path / "last.pt",
              observer=observer, control=Control(), log=MetricsLog(tmp_path / "metrics.jsonl"))


def test_one_nan_rolls_back_and_lowers_the_rate(tmp_path):
    phase, model, _ = make_phase(nan_at={8})  # step 3 of epoch 2
    log = Log()
    run(phase, tmp_path, log)
    assert any("lowered the learning rate" in line for line in log.lines), log.lines
    state = safe_load(tmp_path / "last.pt")
    assert state["epoch"] == 2 and state["lr_lowered"] is True
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * NAN_LR_FACTOR)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_rollback_restores_the_epoch_start_weights(tmp_path):
    phase, model, _ = make_phase(nan_at={3}, epochs=1)  # third step of the first epoch
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = {}

    class Spy(Log):
        def on_log(self, message):  # called right after the rollback
            super().on_log(message)
            seen.update({k: v.clone() for k, v in model.state_dict().items()})

    run(phase, tmp_path, Spy())
    assert seen, "no rollback was reported"
    for key, value in start.items():
        assert torch.equal(seen[key], value)
    assert not torch.equal(model.state_dict()["weight"], start["weight"])  # and training went on


def test_a_second_nan_stops_the_run(tmp_path):
    phase, _, _ = make_phase(nan_at={3, 7})
    with pytest.raises(Diverged, match="again .* after the learning rate was lowered"):
        run(phase, tmp_path, Log())
    assert safe_load(tmp_path / "last.pt")["epoch"] == 1  # the epoch-1 checkpoint is kept


def test_out_of_memory_splits_the_batch_and_keeps_the_numbers(tmp_path):
    """A step that runs out of GPU memory (simulated: torch.OutOfMemoryError from the loss) is redone in two
    halves with accumulated gradients: same weights as an uninterrupted run, and the user is told."""
    reference, ref_model, _ = make_phase(nan_at=set())
    run(reference, tmp_path / "ref", Log())
    phase, model, _ = make_phase(nan_at=set())
    inner = phase.compute_loss
    sizes = []

    def compute_loss(batch):
        sizes.append(int(batch["task"].shape[0]))
        if len(sizes) == 3:  # the third step, full batch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return inner(batch)

    phase.compute_loss = compute_loss
    log = Log()
    run(phase, tmp_path / "oom", log)
    assert sizes[:5] == [4, 4, 4, 2, 2] and set(sizes[5:]) == {2}
    assert any("out of cpu memory at step 3" in line and "2 parts" in line for line in log.lines), log.lines
    for key, value in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert safe_load(tmp_path / "oom" / "last.pt")["epoch"] == 2


def test_out_of_memory_at_the_smallest_split_stops_with_a_clear_error(tmp_path):
    from core.errors import LorkdError
    from core.train.loop import OutOfMemory

    phase, _, _ = make_phase(nan_at=set())

    def compute_loss(batch):
        raise torch.OutOfMemoryError("CUDA out of memory")

    phase.compute_loss = compute_loss
    log = Log()
    with pytest.raises(OutOfMemory, match=r"out of cpu memory at step 1 even with the batch of 4 split into parts "
                                          r"of 2 samples.*device: cpu") as info:
        run(phase, tmp_path, log)
    assert isinstance(info.value, LorkdError) and "\n" not in str(info.value)
    assert sum("out of cpu memory" in line for line in log.lines) == 1  # one retry in halves, then the error
