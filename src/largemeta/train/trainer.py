"""``largemeta train``: the training loop and its logging, one process or many.

    trainer = Trainer(load_config("offline", {"algo": "cts"}), Path("runs/cts"))
    try:
        trainer.run()
    finally:
        trainer.close()

:mod:`largemeta.train.build` builds the run (device, process group, tasks, learner, executor),
:mod:`largemeta.train.state` saves and restores its checkpoint; this module owns the run folder
(:mod:`largemeta.runs`) and the loop: steps, non-finite guards, metrics lines (metrics.jsonl, the trackers),
checkpoints, preemption.

The run folder is claimed (checked, then locked for the life of the trainer) before anything is written, and
nothing is written until the run is built; :mod:`largemeta.train.resume` holds the policy (``resume=True``
continues the checkpoint only when ``cfg`` differs from its config in resumable keys alone).
SIGTERM or SIGINT during :meth:`Trainer.run` finishes the current step, writes a checkpoint and raises
:class:`largemeta.errors.Preempted`. Under torchrun each rank serves its tasks (or a slice of one task's
batch: :mod:`largemeta.train.groups`); rank 0 checks, locks and writes the folder's files, every rank writes
its own part of each checkpoint (:mod:`largemeta.train.state`), and every decision that ends the loop
(a signal, a non-finite value) is agreed by all ranks after the same step.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from largemeta import console, signals, trackers
from largemeta.core.algorithms import ALGORITHMS
from largemeta.errors import Preempted, UserError
from largemeta.metatest import check_image_size
from largemeta.runs import checkpoint
from largemeta.runs.checkpoint import CheckpointOnDisk
from largemeta.runs.folder import write_identity
from largemeta.runs.names import CHECKPOINT, METRICS
from largemeta.train import distributed, state
from largemeta.train.budget import no_meta_update
from largemeta.train.build import build_run, place
from largemeta.train.config import TrainConfig, tracker_names
from largemeta.train.pins import data_identity, pin_data
from largemeta.train.resume import open_run_folder, write_records


class NonFiniteLoss(UserError):
    exit_code = 4


class Trainer:
    """One training run: ``Trainer(cfg, run_dir).run()`` trains to ``cfg.steps`` (resuming with
    ``resume``); ``close()`` releases the run folder and the process group."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        progress: bool = True,
        allow_model_change: bool = False,
        allow_data_change: bool = False,
        check_budget: bool = True,
    ) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.allow_model_change = allow_model_change
        self.allow_data_change = allow_data_change
        self.check_budget = check_budget
        """Warn when ``cfg.steps`` holds no meta-update (an experiment checks its milestones itself)."""
        self.processes = place(cfg)
        self.rank = self.processes.rank
        self.progress = progress and self.rank == 0
        self.identity: dict[str, Any] = {}
        self.checkpoint_step: int | None = None
        """Step of the last checkpoint in the folder (None: none yet)."""
        self.last_record: dict[str, Any] = {}
        self.steps_run = 0
        self._trajectory_eval: dict[str, dict[str, float]] = {}
        """Each local task's held-out accuracy and loss of θ at a log step, before that step's restart."""
        self.resumed_at = 0
        """The step this process started at (0: a new run)."""
        self._window: dict[str, list[float]] = {}
        """Each local task's [sum of training losses, steps] since the last metrics line (checkpointed)."""
        with contextlib.ExitStack() as held:  # on a failed start: the folder given back, the group left
            held.callback(distributed.shutdown)  # no one calls close() on a failed start
            saved = self._open_folder(resume, held)
            trackers.check(tracker_names(cfg))  # a missing package, a bad or dead URI: before any write
            self.run_state = build_run(cfg, self.processes, saved.data_placement if saved else None)
            self._pin_data(saved)  # the data as it is now (loaded, so cached), against the run's record
            for spec in {(s.channels, s.image_size): s for s in self.run_state.specs}.values():
                check_image_size(self.run_state.body, spec.channels, spec.image_size, f"task {spec.name!r}")
            if saved is not None:
                state.restore(self.run_state, saved)
                self.checkpoint_step = saved.step
                self._window = self._restored_window(saved)
            self.controller = getattr(self.learner, "controller", None)
            """φ's schedule (None for joint training: no meta-update, no restart)."""
            if self.controller is not None:
                # measured after the step's meta-update and before its restart (θ, not φ, at a multiple of K)
                self.controller.on_step.append(self._measure_trajectories)
            if self.rank == 0:
                self.last_record = write_records(self.run_dir, cfg, self.identity, saved)
                held.enter_context(console.log_file(self.run_dir))
            self.resumed_at = self.learner.step
            self._held = held.pop_all()  # released by close()

    @property
    def learner(self):
        return self.run_state.learner

    @property
    def tasks(self):
        return self.run_state.tasks

    # the run folder ----------------------------------------------------------------------------------------
    @property
    def meta_updates(self) -> int:
        """Meta-updates of φ so far, counted by the controller from its step (0 for joint training); right
        after a resume too, since the step is restored."""
        return self.controller.meta_updates if self.controller is not None else 0

    def _open_folder(self, resume: bool, held: contextlib.ExitStack) -> CheckpointOnDisk | None:
        """Rank 0 takes the folder (:func:`~largemeta.train.resume.open_run_folder`, its claim entered
        into ``held``); every rank learns the outcome (one line for all, at once, instead of a collective
        timing out) and, resuming, reads the checkpoint."""
        saved, failure = None, None
        outcome: tuple[str, int] | None = None
        if self.rank == 0:
            try:
                opened = open_run_folder(self.run_dir, self.cfg, resume, self.allow_model_change)
                held.enter_context(opened.claim)
                saved, self.identity = opened.saved, opened.identity
            except BaseException as err:
                if self.processes.group is None:
                    raise
                failure = err
                outcome = (str(err), err.exit_code) if isinstance(err, UserError) else ("rank 0 failed", 1)
        outcome = distributed.broadcast(outcome, self.processes.group)
        if failure is not None:
            raise failure
        if outcome is not None:
            err = UserError(outcome[0])
            err.exit_code = outcome[1]
            raise err
        if resume and saved is None:
            saved = checkpoint.read(self.run_dir)
        return saved

    def _pin_data(self, saved: CheckpointOnDisk | None) -> None:
        """Rank 0 records the data this run reads in its identity, or, resuming, refuses data that differ
        from the record (:func:`~largemeta.train.pins.pin_data`); every rank learns the outcome."""
        outcome: tuple[str, int] | None = None
        if self.rank == 0:
            try:
                now = data_identity(
                    self.cfg.suite, self.run_state.specs, self.cfg.data_dir, self.identity.get("data")
                )
                step = saved.step if saved is not None else None
                self.identity = pin_data(self.identity, now, step, self.allow_data_change, self.run_dir)
            except UserError as err:
                if self.processes.group is None:
                    self.run_state.close()
                    raise
                outcome = (str(err), err.exit_code)
        outcome = distributed.broadcast(outcome, self.processes.group)
        if outcome is not None:
            self.run_state.close()
            err = UserError(outcome[0])
            err.exit_code = outcome[1]
            raise err

    def _restored_window(self, saved: CheckpointOnDisk) -> dict[str, list[float]]:
        """This rank's share of the metrics window the checkpoint recorded: its own tasks' sums (rank 0 also
        keeps those of tasks that no rank serves now: a task pool's, drawn out since the line)."""
        window = state.metrics_window(saved)
        local = {t.name for t in self.tasks}
        served = {n for names in distributed.all_gather(sorted(local), self.processes.group) for n in names}
        return {k: v for k, v in window.items() if k in local or (self.rank == 0 and k not in served)}

    def close(self) -> None:
        """Stop the data workers, release the run folder and leave the process group."""
        self.run_state.close()
        self._held.close()  # log.txt, the run folder, the process group

    # checkpoints -------------------------------------------------------------------------------------------
    def _last_good(self) -> str:
        if self.checkpoint_step is None:
            return (
                f"no checkpoint was written yet (the first was due at step {self.cfg.checkpoint_every}); "
                "nothing to resume"
            )
        return f"the last good checkpoint is {str(self.run_dir / CHECKPOINT)!r} (step {self.checkpoint_step})"

    def _first_non_finite(self) -> str | None:
        """Where this rank's state first holds NaN or inf: φ, each task's parameters and BatchNorm buffers."""
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            for k, v in params.items():
                if not bool(torch.isfinite(v).all()):
                    return f"parameter {k!r} in task {task.name!r}"
        for task in self.tasks:
            for k, v in task.buffers.items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    return f"BatchNorm buffer {k!r} in task {task.name!r}"
        for k, v in self.learner.phi.items():
            if not bool(torch.isfinite(v).all()):
                return f"parameter {k!r} of φ"
        return None

    def save(self) -> None:
        """Write the checkpoint (every rank its own entries), after making sure that no non-finite parameter
        or buffer, on any rank, would reach it."""
        # A non-finite gradient shows in the parameters before it shows in a loss (one step later); an
        # unstable inner step can leave the parameters finite and the BatchNorm statistics infinite.
        bad = self._first_non_finite()
        if distributed.any_rank([bad is not None], self.processes.group, self.processes.device)[0]:
            where = bad or "state on another rank"
            raise NonFiniteLoss(
                f"non-finite {where} at step {self.learner.step}; stopped — {self._last_good()}"
            )
        window: dict[str, list[float]] = {}
        for part in distributed.gather(self._window, self.processes.group) or []:
            for name, (total, n) in part.items():
                window[name] = [window.get(name, [0.0, 0])[0] + total, window.get(name, [0.0, 0])[1] + n]
        if self.processes.group is None:
            state.save(self.run_state, self.run_dir, self.identity, window)
        else:
            distributed.guarded(
                lambda: state.save(self.run_state, self.run_dir, self.identity, window),
                "writing a checkpoint",
            )
        self.checkpoint_step = self.learner.step

    # the loop ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to ``cfg.steps``; returns the last metrics line (the kept one when nothing was left)."""
        cfg = self.cfg
        if self.check_budget and self.rank == 0 and self.learner.step < cfg.steps:
            warning = no_meta_update(cfg, cfg.steps, budget=f"--steps {cfg.steps}")
            if warning:
                console.log.warning(warning)
        if self.progress and self.learner.step < cfg.steps:
            console.header(*self._header())
        metrics = self._open_metrics() if self.rank == 0 else None
        tracked = self._trackers() if self.rank == 0 else None
        bar = None
        if self.progress and self.learner.step < cfg.steps:
            bar = console.Progress("step", cfg.steps, every=cfg.log_every, start=self.learner.step)
        window_losses = self._window  # task -> [sum of its losses, steps] in this window (a resume's too)
        window, t0 = 0, time.perf_counter()
        last = self.last_record
        try:
            with signals.deferred():
                while self.learner.step < cfg.steps:
                    names = [t.name for t in self.tasks]  # a task pool's restart at this step swaps tasks
                    take_step = self.run_state.take_step
                    group = self.processes.group
                    losses = (
                        distributed.guarded(take_step, "the meta-update all-reduce") if group else take_step()
                    )
                    self.steps_run += 1
                    step = self.learner.step
                    losses = losses.detach().double().cpu()
                    bad = (~torch.isfinite(losses)).nonzero()
                    stop, bad_anywhere = distributed.any_rank(
                        [signals.pending() is not None, len(bad) > 0], group, self.processes.device
                    )
                    if bad_anywhere:
                        where = (
                            f"loss {losses[int(bad[0])].item()} in task {names[int(bad[0])]!r}"
                            if len(bad)
                            else "loss in a task of another rank"
                        )
                        raise NonFiniteLoss(
                            f"non-finite {where} at step {step}; stopped — {self._last_good()}"
                        )
                    for name, loss in zip(names, losses.tolist(), strict=True):
                        total = window_losses.setdefault(name, [0.0, 0])
                        total[0] += loss
                        total[1] += 1
                    window += 1
                    if bar is not None:
                        bar.update(step, float(losses.mean()))
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        rate = window / (time.perf_counter() - t0)
                        means = {name: total / n for name, (total, n) in window_losses.items()}
                        last = self._log(step, means, rate, metrics, tracked)
                        window_losses.clear()
                        window, t0 = 0, time.perf_counter()
                    if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                        self.save()
                    if stop and step < cfg.steps:  # at the last step the run is simply done
                        raise self._preempted(step)
        except BaseException:
            if tracked is not None:
                tracked.close(failed=True)
            raise
        finally:
            if bar is not None:
                bar.close()
            if metrics is not None:
                metrics.close()
        if tracked is not None:
            tracked.close()
        return last

    def _open_metrics(self):
        """``metrics.jsonl`` for appending: the run's own record, so one that cannot be written (a folder, a
        read-only file) stops the run before its first step, in one line."""
        try:
            return open(self.run_dir / METRICS, "a")
        except OSError as err:
            raise UserError(
                f"cannot write {str(self.run_dir / METRICS)!r}: {err.strerror or err}; nothing was trained — "
                f"{self._last_good()}"
            ) from None

    def _header(self) -> tuple[str, dict[str, Any]]:
        cfg = self.cfg
        names = [s.name for s in self.run_state.specs]
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        at = f" from step {self.learner.step}" if self.learner.step else ""
        return f"train {cfg.algo}{at} -> {self.run_dir}", {
            "device": self.processes.device
            if self.processes.world == 1
            else f"{self.processes.device} x {self.processes.world} ranks",
            "tasks": f"{len(names)} ({shown})"
            + (f", {cfg.tasks_per_trajectory} per trajectory" if cfg.tasks_per_trajectory else ""),
            "suite": cfg.suite,
            "model": f"{cfg.model} width {cfg.width}",
            "K": cfg.k,
            "meta": f"{cfg.meta_optimizer} β {cfg.meta_lr:g}"
            + (f" every {cfg.meta_every}" if ALGORITHMS.get(cfg.algo).cts else ""),
            "inner": f"{cfg.inner_optimizer} α {cfg.inner_lr:g} batch {cfg.batch_size}",
            "steps": cfg.steps,
            "log every": cfg.log_every,
            "trackers": ",".join(tracker_names(cfg)),
        }

    def _trackers(self) -> trackers.Trackers:
        """The run's tracker runs (continued when resuming); their ids recorded in the run's identity
        (run.json now, the checkpoints from the next), which binds them to this run."""
        tracked = trackers.Trackers(
            tracker_names(self.cfg),
            self.run_dir,
            run_id=str(self.identity.get("run_id")),
            params=trackers.hyperparameters(self.cfg.to_dict()),
            resume=self.resumed_at > 0,
            known=self.identity.get("trackers"),
        )
        if tracked.ids and tracked.ids != self.identity.get("trackers"):
            self.identity = {
                **self.identity,
                "trackers": {**self.identity.get("trackers", {}), **tracked.ids},
            }
            try:
                write_identity(self.run_dir, self.identity)
            except UserError as err:  # the next checkpoint records them too
                console.log.warning(f"{err}; the next checkpoint records the tracker runs")
        return tracked

    def _preempted(self, step: int) -> Preempted:
        signum = signals.pending()
        what = signals.name(signum) if signum is not None else "a signal on another rank"
        return Preempted(
            f"stopped by {what} after step {step} of {self.cfg.steps}; checkpoint written to "
            f"{str(self.run_dir / CHECKPOINT)!r}; continue with: largemeta train --resume {self.run_dir}",
            signal_name=what,
            step=step,
        )

    def _held_out(self) -> dict[str, dict[str, float]]:
        """Each local task's accuracy and loss on the first ``eval_batches`` batches of its held-out split
        (NaN: none), with the parameters the tasks hold now."""
        out = {}
        for task, params in zip(self.tasks, self.learner.params, strict=True):
            batches = itertools.islice(task.sampler.train.iter_eval(256), self.cfg.eval_batches)
            out[task.name] = task.loss_and_accuracy(params, batches)
        return out

    def _measure_trajectories(self, controller) -> None:
        """A step hook: at a log step, the held-out accuracy and loss of every trajectory's θ."""
        step = controller.step
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            self._trajectory_eval = self._held_out()

    def _log(self, step: int, losses: dict[str, float], rate: float, metrics, tracked) -> dict[str, Any]:
        """``losses``: each task's mean training loss over the window (with a task pool, the tasks active in
        it); held-out accuracy and loss are θ's before this step's restart, and at a step that restarts,
        ``phi_accuracy`` is φ's (with each task's head, for the tasks active after the restart)."""
        mine: dict[str, dict[str, float]] = {name: {"loss": loss} for name, loss in losses.items()}
        if self.controller is None:
            self._trajectory_eval = self._held_out()
        for name, held_out in self._trajectory_eval.items():
            mine.setdefault(name, {}).update(accuracy=held_out["accuracy"], held_out_loss=held_out["loss"])
        if self.controller is not None and step % self.controller.schedule.k == 0:  # θ = φ now
            for name, held_out in self._held_out().items():
                mine.setdefault(name, {})["phi_accuracy"] = held_out["accuracy"]
        gathered = distributed.gather(mine, self.processes.group)
        if self.rank != 0:
            return {}
        tasks: dict[str, Any] = {}
        for part in gathered or []:
            for name, fields in part.items():
                tasks.setdefault(name, {}).update(fields)
        trained = [t["loss"] for t in tasks.values() if "loss" in t]
        record = {
            "step": step,
            "inner_steps": step,
            "time": time.time(),
            "steps_per_s": rate,
            "mean_loss": sum(trained) / len(trained),
            "meta_grad_norm": self.learner.last_meta_grad_norm,
            "shift_norm": self.learner.last_shift_norm,
            "meta_updates": self.meta_updates,
            "shifts": self.controller.shifts if self.controller else 0,
            "tasks": tasks,
        }
        record.update(self.run_state.log_fields())  # data placement; a task pool's active tasks and draws
        probe = self.run_state.probe
        if probe is not None and probe.records:
            record["shift_error"] = probe.records[-1]
        try:
            metrics.write(json.dumps(_finite(record)) + "\n")
            metrics.flush()
        except OSError as err:
            raise UserError(
                f"cannot write {str(self.run_dir / METRICS)!r}: {err.strerror or err}; stopped at step "
                f"{step} — {self._last_good()}"
            ) from None
        tracked.log(_finite(record))
        console.log.debug(
            f"step {step}: "
            + "; ".join(
                f"{name} " + " ".join(f"{k} {v:.4g}" for k, v in fields.items())
                for name, fields in tasks.items()
            )
        )
        return record


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
