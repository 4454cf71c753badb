"""``Callback``: Lightning's hook names, each called as ``hook(trainer, module, ...)``.

A callback only costs what it overrides: the Trainer registers Engine handlers for the hooks that
at least one callback (or the module) overrides. Among callbacks, hooks run by ``priority``
(higher first; checkpointing and early stopping run last) and then in list order; callbacks run
before the module, except ModelCheckpoint and EarlyStopping on ``on_train_epoch_end`` (after it).
"""

from __future__ import annotations

from typing import Any

from ember.engine.events import Priority


class Callback:
    """Base class for callbacks. Override the hooks you need; the rest are never called.

    Every hook receives the running ``trainer`` (an :class:`ember.context.RunContext`) and the module
    (``pl_module``, Lightning's parameter name) first; the hooks' Args sections list only the
    arguments after them. For one hook, the callbacks run
    before the module's hook of the same name (see the module docstring for the exceptions); the map
    of where each hook fires is in :mod:`ember.trainer.trainer`.
    """

    #: Order among callbacks for the same hook: higher first (see ``ember.engine.Priority``).
    priority: int = Priority.DEFAULT

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        """The callback's state to save in a checkpoint (plain values and tensors).

        Called on every checkpoint that holds the training state, before ``on_save_checkpoint``;
        a non-empty result is stored under ``checkpoint["callbacks"][self.state_key]``. Default: ``{}``
        (nothing stored).
        """
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a stage is given a ``ckpt_path`` and the
        checkpoint holds an entry under this callback's ``state_key``: after the module's weights are
        loaded and this callback's ``on_load_checkpoint``, as in Lightning. Default: nothing."""
        return None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """At the start of every stage, after the datamodule's ``setup`` and before the module's ``setup``
        and ``configure_model``, before the module is moved to its device.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        """

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """At the end of every stage, also when it raised; before the module's ``teardown`` and the
        datamodule's.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        """

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """First hook of the training run, once the optimizers exist and a checkpoint (``ckpt_path``) is
        restored; before the sanity check and ``on_train_start``."""

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Last hook of a ``fit`` that completed, after ``on_train_end`` (``teardown`` follows). Not called
        when ``fit`` raised: ``on_exception`` is."""

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        """Before the sanity check: a short validation (``num_sanity_val_steps`` batches per loader) whose
        logged values reach no logger. Runs after ``on_fit_start`` and only when there is validation data
        and ``num_sanity_val_steps != 0``; ``trainer.sanity_checking`` is True until ``on_sanity_check_end``."""

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        """After the sanity check's validation (its ``on_validation_end`` included), before ``on_train_start``."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Training begins: after ``on_fit_start`` and the sanity check, before the first
        ``on_train_epoch_start``."""

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Training has completed (or been stopped): after the last ``on_train_epoch_end``, before ``on_fit_end``."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """At the start of every training epoch (``trainer.current_epoch`` is the epoch about to run,
        from 0), before its first batch is fetched."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """At the end of every training epoch, after its validation (when one is due) and before the epoch
        values go to the loggers and the epoch-interval schedulers step.

        Callbacks run before the module here, except ModelCheckpoint and EarlyStopping, which run after it
        so they see what it logged. Values logged here are epoch values.
        """

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> Any:
        """Before the training step of each batch, after the batch moved to the device.

        Args:
            batch: the batch, as ``training_step`` will receive it.
            batch_idx: its index in the epoch, from 0.

        Returns:
            Ignored for callbacks, as in Lightning (the module's ``on_train_batch_start`` returning
            ``-1`` skips the rest of the epoch).
        """

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After each training batch, with its optimizer step done (on the batch that ends an accumulation
        window) and its gradients still populated; before its step values go to the loggers and before a
        validation run that is due.

        Args:
            outputs: ``{"loss": the loss, detached and divided by accumulate_grad_batches, ...}`` with the other
                keys of a dict ``training_step`` returned; ``{}`` when it returned None (a skipped batch).
                Under manual optimization: the returned dict (or ``{"loss": tensor}``) with the loss detached.
            batch: the batch the step received.
            batch_idx: its index in the epoch, from 0.
        """

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """At the start of every validation run (inside ``fit``, the sanity check, or ``validate()``), after
        the module was put in eval mode; before ``on_validation_epoch_start``."""

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """At the end of every validation run, after ``on_validation_epoch_end`` and the epoch values went
        to the loggers; then each submodule's train/eval mode is restored. Inside ``fit`` this precedes
        ``on_train_epoch_end`` when validation ends an epoch."""

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """After ``on_validation_start``, before the first batch of the pass over all validation loaders."""

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """After the last validation batch of all loaders, before the epoch values go to the loggers
        (values logged here are included) and before ``on_validation_end``."""

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Before ``validation_step`` for each batch, after the batch moved to the device.

        Args:
            batch: the batch, as ``validation_step`` will receive it.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several validation loaders.
        """

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """After ``validation_step`` for each batch.

        Args:
            outputs: what ``validation_step`` returned for this batch.
            batch: the batch the step received.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several validation loaders.
        """

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        """At the start of ``test()``'s run, after the module was put in eval mode; before
        ``on_test_epoch_start``."""

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        """At the end of ``test()``'s run, after ``on_test_epoch_end`` and the epoch values went to the
        loggers; then each submodule's train/eval mode is restored."""

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """After ``on_test_start``, before the first batch of the pass over all test loaders."""

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """After the last test batch of all loaders, before the epoch values go to the loggers (values
        logged here are included) and before ``on_test_end``."""

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Before ``test_step`` for each batch, after the batch moved to the device.

        Args:
            batch: the batch, as ``test_step`` will receive it.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several test loaders.
        """

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """After ``test_step`` for each batch.

        Args:
            outputs: what ``test_step`` returned for this batch.
            batch: the batch the step received.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several test loaders.
        """

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """At the start of ``predict()``'s run, after the module was put in eval mode; before
        ``on_predict_epoch_start``."""

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """At the end of ``predict()``'s run, after ``on_predict_epoch_end``, with every prediction collected."""

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """After ``on_predict_start``, before the first batch of the pass over all predict loaders."""

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """After the last predict batch of all loaders, before ``on_predict_end``."""

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Before ``predict_step`` for each batch, after the batch moved to the device.

        Args:
            batch: the batch, as ``predict_step`` will receive it.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several predict loaders.
        """

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """After ``predict_step`` for each batch.

        Args:
            outputs: the prediction ``predict_step`` returned (``trainer.predict`` collects it).
            batch: the batch the step received.
            batch_idx: its index within its loader, from 0.
            dataloader_idx: the loader's index; passed only when there are several predict loaders.
        """

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        """Before each backward pass: in automatic optimization inside the step's closure (after
        ``on_before_zero_grad`` on a window's first micro-batch), and in ``manual_backward``.

        Args:
            loss: the loss about to be backpropagated (divided by ``accumulate_grad_batches`` in automatic
                optimization; not yet scaled by the 16-mixed GradScaler).
        """

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        """After each backward pass, with the gradients accumulated into ``.grad``; before
        ``on_before_optimizer_step`` when the batch ends an accumulation window."""

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Once the gradients of an optimizer step are complete: after the closure's backward, before
        gradient clipping and the update (``global_step`` not yet incremented). A good place to inspect
        gradient norms.

        Args:
            optimizer: the ``torch.optim.Optimizer`` about to step.
        """

    def on_before_zero_grad(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Before the gradients are zeroed: in automatic optimization on the first micro-batch of each
        accumulation window, after ``training_step`` and before ``on_before_backward``.

        Args:
            optimizer: the optimizer whose gradients are about to be zeroed.
        """

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """When an exception escapes a step or hook while a stage's loop runs: once per exception, before
        it propagates (and before ``teardown``).

        Args:
            exception: the exception raised.
        """

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """When a checkpoint is built (``ModelCheckpoint``, ``trainer.save_checkpoint``, a stop signal),
        before it is written: after every callback's ``state_dict`` was stored, before the module's hook.

        Args:
            checkpoint: the dict about to be written; add plain values or tensors to it (in place).
        """

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """When a stage (``fit``, ``validate``, ``test``, ``predict``) is given a ``ckpt_path``: after the
        module's ``on_load_checkpoint`` and its weights, before every callback's ``load_state_dict``
        (and, in ``fit``, before the optimizers and the loop's progress are restored), as in Lightning.

        Args:
            checkpoint: the loaded checkpoint dict (see :mod:`ember.checkpoint.format`).
        """
