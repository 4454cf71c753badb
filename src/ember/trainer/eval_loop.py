"""Validation, test and predict: one engine each, the same pattern, their own hooks.

Each run chains the stage's loaders into one epoch (:class:`~ember.trainer.data.EvalData`),
under ``torch.inference_mode`` (``no_grad`` with ``Trainer(inference_mode=False)``, and for the
validation inside ``fit``, as Lightning), with the module in eval mode; the module's train/eval
mode is restored afterwards.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch

from ember.callbacks.prediction_writer import prepare_predict_loaders
from ember.engine import Engine, Events, Priority
from ember.trainer.data import EvalData, batch_transfer
from ember.trainer.hooks import Dispatch
from ember.trainer.views import RunningStage
from ember.tree import tree_map

HOOK_PREFIX = {"validate": "validation", "test": "test", "predict": "predict"}
RUNNING_STAGE = {"validate": RunningStage.VALIDATING, "test": RunningStage.TESTING, "predict": RunningStage.PREDICTING}
STEP_NAME = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}
_DL_SUFFIX = re.compile(r"/dataloader_idx_(\d+)$")


class EvalLoop:
    """Runs one evaluation stage (``validate``, ``test`` or ``predict``) on its engine."""

    def __init__(self, trainer: Any, stage: str) -> None:
        self.trainer = trainer
        self.stage = stage
        self.prefix = HOOK_PREFIX[stage]
        self.engine = Engine(self.unattached)
        self.data: EvalData | None = None
        self.predictions: list[list[Any]] = []
        self.keep_predictions = True  # predict(return_predictions=False) keeps none
        self.loaders: list[Any] = []  # of the running (or last) pass
        self.seen_batches: dict[int, int] = {}  # per loader, for step rows (reset per fit / per call)
        self.result_dataloaders: dict[str, frozenset[int]] = {}
        self.counts: list[int | None] = []
        self.results: dict[str, float] = {}
        self._handles: list[Any] = []
        self._checked_idx: set[bool] = set()  # loader counts (one / several) whose hook signatures are checked

    @staticmethod
    def unattached(engine: Engine, batch: Any) -> Any:
        raise RuntimeError("this engine is run by the Trainer (trainer.validate/test/predict), not directly")

    # ------------------------------------------------------------------ attach / detach

    def attach(self, module: Any, dispatch: Dispatch) -> None:
        tr = self.trainer
        self.module, self.dispatch = module, dispatch
        self.seen_batches = {}
        self._checked_idx = set()
        p = self.prefix
        step_fn = tr.precision_plugin.wrap(getattr(module, STEP_NAME[self.stage]))
        loop = self
        if self.stage == "predict":

            def predict_process(engine: Engine, batch: Any) -> Any:
                data = loop.data
                args = (
                    (batch, data.batch_idx, data.dataloader_idx) if len(data.loaders) > 1 else (batch, data.batch_idx)
                )
                out = step_fn(*args)
                if loop.keep_predictions:  # on the CPU, as Lightning: device memory does not grow with the data
                    loop.predictions[data.dataloader_idx].append(tree_map(_to_cpu, out))
                return out

            self.engine.process_function = predict_process
        else:
            ctx = tr._logging.ctx

            def eval_process(engine: Engine, batch: Any) -> Any:
                data = loop.data
                if len(data.loaders) > 1:
                    ctx.dataloader_idx = data.dataloader_idx
                    return step_fn(batch, data.batch_idx, data.dataloader_idx)
                return step_fn(batch, data.batch_idx)

            self.engine.process_function = eval_process
        on = self._on
        on(Events.STARTED, lambda e: self._call_level(f"on_{p}_start"))
        on(Events.EPOCH_STARTED, self._on_epoch_started)
        if dispatch.calls(f"on_{p}_batch_start"):
            on(Events.ITERATION_STARTED, self._batch_hook(f"on_{p}_batch_start", with_output=False))
        on(Events.ITERATION_COMPLETED, self._batch_end(f"on_{p}_batch_end"))
        on(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        on(Events.COMPLETED, lambda e: self._call_level(f"on_{p}_end"))
        self._handles.append(
            self.engine.add_event_handler(Events.EXCEPTION_RAISED, tr._on_exception, priority=Priority.TRAINER_LAST)
        )
        transfer = batch_transfer(module, tr.root_device, tr.precision_plugin, lambda: loop.data.dataloader_idx)
        if transfer is not None:
            on(Events.GET_BATCH_COMPLETED, transfer)

    def _on(self, event: Any, handler: Any) -> None:
        self._handles.append(self.engine.add_event_handler(event, handler, priority=Priority.TRAINER))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ handlers

    def _call_level(self, hook: str) -> None:
        ctx = self.trainer._logging.ctx
        ctx.epoch_level = True
        self.dispatch.call(hook)

    def _on_epoch_started(self, engine: Engine) -> None:
        ctx = self.trainer._logging.ctx  # (the store was reset on entering the stage: on_*_start's values stay)
        self._call_level(f"on_{self.prefix}_epoch_start")
        ctx.epoch_level = False

    def _batch_end(self, hook: str) -> Any:
        """``on_*_batch_end``, then the batch's step values to the loggers (as Lightning: every batch,
        at a step counting each loader's batches over the fit or the validate/test call)."""
        hooks = self._batch_hook(hook, with_output=True) if self.dispatch.calls(hook) else None
        logging = self.trainer._logging
        loop = self

        def batch_end(engine: Engine) -> None:
            if hooks is not None:
                hooks(engine)
            if loop.trainer.sanity_checking:
                return
            idx = loop.data.dataloader_idx
            seen = loop.seen_batches.get(idx, 0)
            store = logging.ctx.store
            if store is not None and store.step_dirty:
                logging.flush_steps(seen)
            loop.seen_batches[idx] = seen + 1

        return batch_end

    def _batch_hook(self, hook: str, with_output: bool) -> Any:
        calls = self.dispatch.calls(hook)
        loop = self

        def batch_hook(engine: Engine) -> None:
            data = loop.data
            state = engine.state
            args: tuple = (state.batch, data.batch_idx)
            if with_output:
                args = (state.output, *args)
            if len(data.loaders) > 1:
                args = (*args, data.dataloader_idx)
            for fn in calls:
                fn(*args)

        return batch_hook

    def _on_epoch_completed(self, engine: Engine) -> None:
        tr = self.trainer
        self._call_level(f"on_{self.prefix}_epoch_end")
        if self.stage != "predict":
            progress = tr.fit_progress  # as Lightning: the fit's logging step (before the last batch's, inside fit)
            step = progress.log_step if tr.fitting else progress.batches_stepped
            self.results = tr._logging.finish_epoch(tr._logging.ctx.store, step, tr.current_epoch)
            self.result_dataloaders = dict(tr._logging.result_dataloaders)
            tr._logging.save_loggers()

    # ------------------------------------------------------------------ running

    def run(self, loaders: list[Any], counts: list[int | None]) -> None:
        """One pass over ``loaders`` (``counts`` batches each); hooks and logging as attached."""
        tr = self.trainer
        if self.stage == "predict":  # prediction writers see each batch's sample indices (as Lightning)
            loaders = prepare_predict_loaders(loaders, self.dispatch.callbacks)
        self._check_dataloader_idx(len(loaders) > 1)
        self.data = data = EvalData(loaders, counts)
        self.loaders, self.counts = list(loaders), list(counts)
        self.predictions = [[] for _ in loaders]
        self.results = {}
        if data.total == 0:
            return
        tr._eval_total_batches = data.total
        module = self.module
        modes = [(m, m.training) for m in module.modules()]  # each submodule's own (a frozen one stays frozen)
        logging_stage = "validate" if self.stage == "validate" else self.stage
        saved = tr._logging.enter(logging_stage, self.engine, multi_dataloader=len(loaders) > 1)
        saved_stage, tr.state.stage = tr.state.stage, RUNNING_STAGE[self.stage] if not tr.sanity_checking else RunningStage.SANITY_CHECKING
        # as Lightning: validation inside fit runs under no_grad (its tensors may meet autograd later)
        grad_context = torch.inference_mode() if tr.inference_mode and not tr.fitting else torch.no_grad()
        try:
            to_eval = self.dispatch.module_hook(f"on_{self.prefix}_model_eval")
            if to_eval is not None:
                to_eval()
            else:
                module.eval()
            with grad_context:
                self.engine.run(data, max_epochs=1, epoch_length=data.total)
        finally:
            tr._logging.restore(saved)
            tr.state.stage = saved_stage
            to_train = self.dispatch.module_hook(f"on_{self.prefix}_model_train") if self.stage != "predict" else None
            if to_train is not None:
                to_train()
            else:
                for m, training in modes:
                    m.training = training

    def _check_dataloader_idx(self, several: bool) -> None:
        """As Lightning, before any hook: with several loaders the module's step and batch hooks must
        take ``dataloader_idx`` (or ``*args``); with one, a ``dataloader_idx`` must have a default."""
        if several in self._checked_idx:
            return
        prefix = "val" if self.stage == "validate" else self.stage
        for name in (STEP_NAME[self.stage], f"on_{self.prefix}_batch_start", f"on_{self.prefix}_batch_end"):
            problem = _dataloader_idx_problem(getattr(self.module, name, None), several)
            if problem is not None:
                where = f"`{type(self.module).__name__}.{name}()`"
                raise RuntimeError(
                    f"You provided multiple `{prefix}_dataloader`, but no `dataloader_idx` argument in {where}. "
                    "Try adding `dataloader_idx=0` to its signature."
                    if several
                    else f"You provided only a single `{prefix}_dataloader`, but have included `dataloader_idx` in "
                    f"{where}. Either remove the argument or give it a default value i.e. `dataloader_idx=0`."
                )
        self._checked_idx.add(several)

    def results_per_dataloader(self, n: int) -> list[dict[str, float]]:
        """Split this run's results by loader: a ``/dataloader_idx_N`` key goes to loader N, a key
        logged without it to the loaders that logged it (epoch-level hooks' keys go to all)."""
        out: list[dict[str, float]] = [{} for _ in range(n)]
        for key, value in self.results.items():
            m = _DL_SUFFIX.search(key)
            if m is not None and int(m.group(1)) < n:
                out[int(m.group(1))][key] = value
                continue
            owners = self.result_dataloaders.get(key)
            for i, d in enumerate(out):
                if owners is None or i in owners:
                    d[key] = value
        return out


def _dataloader_idx_problem(hook: Any, several: bool) -> str | None:
    """Why ``hook`` cannot be called with (several: with) or (one loader: without) ``dataloader_idx``."""
    try:
        params = inspect.signature(hook).parameters if callable(hook) else None
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call decide
        params = None
    if params is None:
        return None
    param = params.get("dataloader_idx")
    if several:
        varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values())
        return None if param is not None or varargs else "missing"
    return "required" if param is not None and param.default is inspect.Parameter.empty else None


def _to_cpu(value: Any) -> Any:
    return value.cpu() if isinstance(value, torch.Tensor) else value
