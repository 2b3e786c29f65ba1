import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TinyNet, tiny_probe
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from recorder import RunStore  # noqa: E402
from recorder.hooks import UnknownLayerError  # noqa: E402
from recorder.lightning import RecorderCallback, default_labels  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")  # lightning's own

N_TRAIN, BATCH = 24, 4  # 6 batches per epoch


class TinyModule(pl.LightningModule):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.net = TinyNet()
        self.fail_at = fail_at

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            self.hooked_at_failure = hooked_modules(self)
            raise RuntimeError("training_step failed on purpose")
        x, y = batch
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def on_validation_epoch_end(self):
        self.log("val_epoch_score", self.current_epoch + 0.5)  # logged after the callbacks' epoch-end hooks

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n=N_TRAIN, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 3)
    return DataLoader(data, batch_size=BATCH, shuffle=False)


def fit(tmp_path, callbacks, module=None, ckpt_path=None, **trainer_kwargs):
    kwargs = dict(accelerator="cpu", devices=1, max_steps=7, enable_checkpointing=False, logger=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                  limit_val_batches=1, num_sanity_val_steps=1)
    trainer = pl.Trainer(callbacks=callbacks, **{**kwargs, **trainer_kwargs})
    module = module or TinyModule()
    trainer.fit(module, loader(), loader(8, seed=1), ckpt_path=ckpt_path)
    return trainer, module


def hooked_modules(module):
    return [name for name, m in module.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def train_count(run, layer):
    return run.layer(layer).train_count.sum()


def test_rows_online_counts_and_validation_metrics(tmp_path):
    callback = RecorderCallback(["net.block.conv", "net.fc"], probe=tiny_probe(), store=tmp_path / "run", every=4,
                                log_metrics=["val_acc", "val_epoch_score"], progress=False)
    trainer, module = fit(tmp_path, [callback], max_steps=7)
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [1, 4, 7]  # first, every=4, final
    np.testing.assert_allclose(run.epochs, [1 / 6, 4 / 6, 1 + 1 / 6])
    for layer in ("net.block.conv", "net.fc"):
        assert train_count(run, layer) == 7 * BATCH  # every training sample seen, once
        assert run.layer(layer).train_count[0].sum() == BATCH
    # the validation after epoch 0 (after optimizer step 6) is stored at step 6
    steps, values = run.scalar("val_acc")
    assert steps.tolist() == [6] and 0 <= values[0] <= 1
    assert run.scalar("val_epoch_score")[0].tolist() == [6] and run.scalar("val_epoch_score")[1].tolist() == [0.5]
    assert np.isnan(run.metric("val_acc")).all()  # no row at step 6
    assert np.isfinite(run.metric("train_accuracy")).all()  # logits from training_step's dict
    assert hooked_modules(module) == []
    assert callback.state_dict()["last_recorded_step"] == 7


def test_gradient_accumulation_records_each_optimizer_step_once(tmp_path):
    callback = RecorderCallback(["block.conv"], probe=tiny_probe(), store=tmp_path / "run", every=2,
                                module="net", progress=False)
    fit(tmp_path, [callback], max_steps=5, accumulate_grad_batches=2)
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [1, 2, 4, 5]
    assert train_count(run, "block.conv") == 5 * 2 * BATCH  # both micro-batches of every step
    assert run.layer("block.conv").train_count[0].sum() == 2 * BATCH


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"layers": ["net.conv1", "net.nope"]}, UnknownLayerError,
     r"Cannot use RecorderCallback on TinyModule: unknown layer 'net\.nope'.*Valid layer names: 'net', 'net\.conv1'"),
    ({"layers": ["conv9"], "module": "net"}, UnknownLayerError,
     r"TinyModule\.net: unknown layer 'conv9' \(did you mean 'conv1'.*Valid layer names: 'conv1', 'bn'"),
    ({"layers": ["conv1"], "module": "body"}, AttributeError,
     r"RecorderCallback\(module='body'\) with TinyModule: pl_module has no submodule 'body'; "
     r"its submodules: \['net'\]"),
], ids=["unknown-layer", "unknown-layer-in-module", "unknown-module"])
def test_bad_layer_or_module_raises_at_fit_start(tmp_path, options, error, match):
    module = TinyModule()
    callback = RecorderCallback(probe=tiny_probe(), store=tmp_path / "run", progress=False, **options)
    with pytest.raises(error, match=match):
        fit(tmp_path, [callback], module=module)
    assert hooked_modules(module) == []
    assert not (tmp_path / "run").exists()  # names are checked before anything is written


def test_exception_in_training_step_removes_hooks_without_final_row(tmp_path):
    module = TinyModule(fail_at=3)
    callback = RecorderCallback(["net.conv1"], probe=tiny_probe(), store=tmp_path / "run", every=100,
                                progress=False)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        fit(tmp_path, [callback], module=module)
    assert "net.conv1" in module.hooked_at_failure and hooked_modules(module) == []
    assert RunStore.open(tmp_path / "run").steps.tolist() == [1]  # the first row; no final row


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resume_continues_the_store(tmp_path):
    store, ckpts = tmp_path / "run", tmp_path / "ckpt"

    def make(**kwargs):
        return RecorderCallback(["net.fc"], probe=tiny_probe(), store=store, every=4, progress=False, **kwargs)

    saver = pl.callbacks.ModelCheckpoint(dirpath=ckpts, every_n_train_steps=4, save_top_k=-1)
    fit(tmp_path, [make(), saver], max_steps=8, enable_checkpointing=True)
    assert RunStore.open(store).steps.tolist() == [1, 4, 8]
    ckpt = next(ckpts.glob("*step=4.ckpt"))
    state = torch.load(ckpt, weights_only=False)["callbacks"][make().state_key]
    assert state["last_recorded_step"] == 4

    # the store is ahead of the step-4 checkpoint: its rows stand, steps 5..8 are not recorded again
    with pytest.warns(UserWarning, match="behind the store's last row at step 8"):
        fit(tmp_path, [make()], ckpt_path=ckpt, max_steps=12)
    run = RunStore.open(store)
    assert run.steps.tolist() == [1, 4, 8, 12]
    assert train_count(run, "net.fc") == 12 * BATCH

    module = TinyModule()  # a fresh run into the same store is refused
    with pytest.raises(RuntimeError, match="has rows up to step 12 but training starts at step 0"):
        fit(tmp_path, [make()], module=module)
    assert hooked_modules(module) == [] and RunStore.open(store).steps.tolist() == [1, 4, 8, 12]


def test_recording_does_not_change_training(tmp_path):
    weights = []
    for callbacks in ([], [RecorderCallback(["net.conv1", "net.fc"], probe=tiny_probe(), store=tmp_path / "run",
                                            every=2, progress=False)]):
        pl.seed_everything(0, verbose=False)
        _, module = fit(tmp_path, callbacks, max_steps=5)
        weights.append(module.state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"every": 0}, ValueError, r"every given an invalid value: 0; expected an integer >= 1"),
    ({"quantile": 1.5}, ValueError, r"quantile given an invalid value: 1\.5; expected a number in \(0, 1\)"),
    ({"topk": 0}, ValueError, r"topk given an invalid value: 0; expected an integer >= 1"),
    ({"layers": []}, ValueError, r"option 'layers' given an invalid value: \[\]"),
    ({"layers": ["fc", "fc"]}, ValueError, r"'layers' given an invalid value: \['fc', 'fc'\]; names \['fc'\] appear"),
    ({"module": "net.1"}, ValueError, r"option 'module' given an invalid value: 'net\.1'; expected None"),
    ({"get_labels": 3}, ValueError, r"option 'get_labels' given an invalid value: 3; expected None or a function"),
    ({"log_metrics": [3]}, ValueError, r"option 'log_metrics' given an invalid value: \[3\]"),
    ({"store": 3}, ValueError, r"store given an invalid value: 3; expected a folder path or URL"),
    ({"probe": None}, ValueError, r"nothing to record: give probe="),
    ({"sheep": 1}, TypeError, r"unknown argument\(s\) \['sheep'\]; valid Recorder arguments: \['probe', 'store', "),
])
def test_arguments_are_checked_in_init(kwargs, error, match):
    arguments = {"layers": ["net.fc"], "probe": tiny_probe(n=3), **kwargs}
    with pytest.raises(error, match=match):
        RecorderCallback(**arguments)


def test_every_bad_argument_is_reported_at_once():
    with pytest.raises(ValueError, match="3 invalid RecorderCallback arguments") as info:
        RecorderCallback(["net.fc"], probe=tiny_probe(n=3), every=0, quantile=2, online="yes")
    message = str(info.value)
    for name in ("every", "quantile", "online"):
        assert f"{name} given an invalid value" in message


def test_arguments_after_layers_are_keyword_only():
    with pytest.raises(TypeError):
        RecorderCallback(["net.fc"], tiny_probe(n=3))


def test_default_labels_names_the_fix():
    assert default_labels((torch.zeros(2, 3), torch.tensor([1, 2]))).tolist() == [1, 2]
    with pytest.raises(TypeError, match="batch of type dict.*pass get_labels="):
        default_labels({"image": torch.zeros(2, 3)})


def test_recorder_package_does_not_import_lightning():
    code = ("import sys, recorder, recorder.recording, recorder.store; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_metrics_all_mirrors_every_logged_scalar(tmp_path):
    callback = RecorderCallback(["net.fc"], probe=tiny_probe(), store=tmp_path / "run", every=4,
                                log_metrics="all", progress=False)
    fit(tmp_path, [callback], max_steps=7)
    run = RunStore.open(tmp_path / "run")
    assert {"val_acc", "val_epoch_score"} <= set(run.scalar_names)
    assert run.scalar("val_acc")[0].tolist() == [6]
