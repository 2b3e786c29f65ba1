"""`python -m training train`: train one model and record how its units become tuned.

    python -m training train --out runs/demo/baseline [--config base.json] [--set lr=0.1 --set batchnorm=true]
    torchrun --nproc_per_node=2 -m training train --out runs/ddp/baseline --set threads=1
    summary = train(TrainConfig(steps=500), "runs/demo/baseline")     # from Python

A run folder gets `config.json` (the `TrainConfig`), `record.zarr/` (a Recorder:
online class sums every step, a probe pass with Network Dissection every
`record_every` steps and at the end) and `checkpoints/step_<N>.pt` at the same
steps. Step N means "after N optimizer updates": row 0 is the untrained model.
Held-out accuracy is stored in each row as `metrics/heldout_accuracy`.

Rerunning into a folder that has checkpoints resumes from the newest one: the
model, optimizer, scheduler and RNG state are loaded, the Recorder appends to the
same store and steps continue. Only `steps`, `progress` and `threads` may differ
from the saved config (e.g. to train a finished run for longer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recorder import Recorder
from training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import ConfigError, TrainConfig, differing_keys, load_config
from training.datasets import augment, batch_indices, load_data
from training.ddp import Distributed, evaluate
from training.models import build_model, conv_layers, record_layers
from training.selectivity import SelectivityRegularizer

__all__ = ["RESUMABLE", "lr_factor", "make_optimizer", "train", "main"]

RESUMABLE = ("steps", "progress", "threads")  # config keys a resumed run may change


def lr_factor(config: TrainConfig, step: int) -> float:
    """Learning-rate multiplier for the update after `step` updates (linear warm-up, then the schedule)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if config.schedule == "step":
        return 0.1 ** ((t >= 0.5) + (t >= 0.75))
    return 1.0


def make_optimizer(config: TrainConfig, model: torch.nn.Module):
    """(optimizer, LambdaLR scheduler) for `config`."""
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.momentum, 0.999),
                                weight_decay=config.weight_decay)

    def factor(step: int) -> float:
        return lr_factor(config, step)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _resume_state(out: Path, config: TrainConfig) -> dict | None:
    """The newest checkpoint of the run at `out` (None for a new run), checked against `config`."""
    path = latest_checkpoint(out)
    if path is None:
        if (out / "record.zarr").exists():
            raise FileExistsError(f"{out} has a record.zarr but no checkpoints to resume from; "
                                  "delete the folder or choose another --out")
        return None
    state = load_checkpoint(path)
    saved = TrainConfig.from_dict(state["config"])
    changed = [k for k in differing_keys(saved, config) if k not in RESUMABLE]
    if changed:
        raise ConfigError(
            f"cannot resume {out}: its config differs in {changed} (saved: "
            f"{ {k: getattr(saved, k) for k in changed} }, given: { {k: getattr(config, k) for k in changed} }); "
            f"only {list(RESUMABLE)} may change. Delete the folder to start over.")
    return state


def occlusion_option(config: TrainConfig) -> dict | None:
    """The Recorder's `occlusion=` from the config's `occlusion_*` fields (None: no occlusion)."""
    if not config.occlusion_layers:
        return None
    return {"layers": list(config.occlusion_layers), "every": config.occlusion_every, "patch": config.occlusion_patch,
            "stride": config.occlusion_stride, "fill": config.occlusion_fill, "measure": config.occlusion_measure}


def _regularized_layers(model, layers: list[str]) -> list[str]:
    """The recorded conv layers: the regularizer's layers (Leavitt & Morcos use conv layers)."""
    try:
        convs = set(conv_layers(model))
    except TypeError:  # a model without recommendations: every recorded layer but the logits
        return [name for name in layers if name != "fc"]
    return [name for name in layers if name in convs]


class _Window:
    """Training loss (and minibatch SI) summed since the last record step, all-reduced when read."""

    def __init__(self, device):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # (loss, si, batches)

    def add(self, loss: float, si: float) -> None:
        self.sums += torch.tensor([loss, si, 1.0], dtype=torch.float64, device=self.sums.device)

    def take(self, world: int) -> tuple[float, float]:
        if world > 1:
            torch.distributed.all_reduce(self.sums)
        loss, si, n = self.sums.tolist()
        self.sums.zero_()
        return (loss / n, si / n) if n else (math.nan, math.nan)


def train(config: TrainConfig, out: str | os.PathLike, *, stop_at: int | None = None) -> dict:
    """Train and record one run into folder `out`; returns a summary dict.

    `stop_at` ends this session after that step (checkpoint and row written), as an
    interruption would; calling `train` again resumes.
    """
    out = Path(out)
    t0 = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    with Distributed(config.device) as env:
        state = _resume_state(out, config)
        env.barrier()  # every rank has looked for checkpoints before rank 0 writes any
        torch.manual_seed(config.seed)
        data = load_data(config)
        model = build_model(config, len(data.classes)).to(env.device)
        optimizer, scheduler = make_optimizer(config, model)
        start = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start = int(state["step"])
        end = config.steps if stop_at is None else min(stop_at, config.steps)
        summary = {"run": str(out), "start_step": start, "steps": max(start, end), "resumed": state is not None}
        if start >= end:
            return {**summary, "heldout_accuracy": evaluate(model, data.heldout, env),
                    "wall_s": time.perf_counter() - t0}
        layers = config.record_layers or record_layers(model)
        ddp_model = env.wrap(model)
        with contextlib.ExitStack() as stack:
            rec = None
            if config.record:
                rec = stack.enter_context(Recorder(
                    ddp_model, layers, probe=data.probe, store=out, every=config.record_every,
                    quantile=config.quantile, topk=min(config.topk, len(data.probe)), dissect=config.dissect,
                    config=config.to_dict(), progress=config.progress, topk_by=tuple(config.topk_by),
                    occlusion=occlusion_option(config)))
            reg = None
            if config.selectivity_alpha:
                reg = stack.enter_context(SelectivityRegularizer(
                    model, _regularized_layers(model, layers), len(data.classes)))
            if env.is_main:
                out.mkdir(parents=True, exist_ok=True)
                config.save(out / "config.json")

            def checkpoint_and_metrics(step: int, extra: dict) -> float:
                accuracy = evaluate(model, data.heldout, env)
                if env.is_main:
                    save_checkpoint(out, step, model, optimizer, scheduler, config.to_dict())
                if rec is not None:
                    rec.log_metrics({"heldout_accuracy": accuracy, **extra}, step=step)
                return accuracy

            accuracy = math.nan
            if state is None:
                accuracy = checkpoint_and_metrics(0, {})
                if rec is not None:
                    rec.step(0)  # row 0: the untrained model (no training batch yet)
            elif rec is not None:
                last = rec.last_recorded_step
                if last is not None and last > start:
                    raise RuntimeError(f"{out}: the store has rows up to step {last} but the newest checkpoint "
                                       f"is step {start}; it cannot continue behind its own record")
                if last is None or last < start:  # the checkpoint was written, its row was not
                    rec.record(start, metrics={"heldout_accuracy": evaluate(model, data.heldout, env)})
            window = _Window(env.device)
            n_train, batch = len(data.train), config.batch_size
            bar = tqdm(range(start + 1, end + 1), initial=start, total=config.steps, desc=out.name,
                       disable=not (config.progress and env.is_main), leave=False)
            for step in bar:
                local, rows = env.shard(batch_indices(step, batch, n_train, config.seed))
                x, y = data.train.batch(local)
                if config.augment:
                    x = augment(x, rows, batch)
                x, y = x.to(env.device), y.to(env.device)
                ddp_model.train()
                logits = ddp_model(x)                                           # (B_local, C)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                si = math.nan
                if reg is not None:
                    mean_si = reg.mean_si(y)
                    loss_total = loss - config.selectivity_alpha * mean_si
                    si = float(mean_si.detach())
                else:
                    loss_total = loss
                if not torch.isfinite(loss_total):
                    raise FloatingPointError(
                        f"{out}: the loss is {float(loss_total.detach())} at step {step}; lower lr"
                        + (" or |selectivity_alpha|" if reg is not None else ""))
                optimizer.zero_grad(set_to_none=True)
                loss_total.backward()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                window.add(float(loss.detach()), si)
                if step % config.record_every == 0 or step == end:
                    train_loss, train_si = window.take(env.world)
                    extra = {"train_loss": train_loss, "lr": lr}
                    if reg is not None:
                        extra["train_selectivity"] = train_si
                    accuracy = checkpoint_and_metrics(step, extra)
                    bar.set_postfix(loss=f"{train_loss:.3f}", heldout=f"{accuracy:.3f}")
                if rec is not None:
                    rec.step(step, labels=y, logits=logits, epoch=step * batch / n_train)
            bar.close()
        return {**summary, "heldout_accuracy": accuracy, "wall_s": time.perf_counter() - t0}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder, e.g. runs/<sweep>/<run>")
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (repeatable), e.g. --set lr=0.1")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except (ConfigError, OSError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    summary = train(config, args.out)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['run']}: step {summary['steps']}, held-out accuracy "
              f"{summary['heldout_accuracy']:.3f}, {summary['wall_s']:.0f}s"
              + (f" (resumed at step {summary['start_step']})" if summary["resumed"] else ""))


if __name__ == "__main__":
    main()
