"""Use a shared model for attribution without leaving a trace on it.

Captum registers hooks on modules and needs gradients; the dashboard shares one model
object between sessions (``st.cache_resource``). ``model_guard`` serialises attribution
calls on one model (a per-model lock, as TorchCAM's demo does), switches it to eval mode,
turns off in-place activations (they break hook-based methods: a backward hook on a
module whose output is modified in place raises), and on exit restores every flag and
removes any hook that was added during the call, even when the call failed.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock of ``model``; created once and dropped when the model is garbage-collected."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = threading.RLock()
            _LOCKS[model] = lock
        return lock


@dataclass
class _ModuleState:
    """What a call may change on one module, to be put back exactly (and only if changed)."""

    module: nn.Module
    training: bool
    inplace: bool | None
    full_backward: bool | None
    hook_keys: tuple[set[int] | None, ...]

    @classmethod
    def of(cls, module: nn.Module) -> _ModuleState:
        flag = getattr(module, "inplace", None)
        return cls(
            module,
            module.training,
            flag if isinstance(flag, bool) else None,
            module._is_full_backward_hook,
            tuple(
                set(d.keys()) if (d := getattr(module, name, None)) is not None else None
                for name in _HOOK_DICTS
            ),
        )

    def restore(self) -> None:
        m = self.module
        for name, before in zip(_HOOK_DICTS, self.hook_keys):
            hooks = getattr(m, name, None)
            if hooks is not None and before is not None and len(hooks) != len(before):
                for key in [k for k in hooks if k not in before]:
                    del hooks[key]
        if m._is_full_backward_hook is not self.full_backward:
            m._is_full_backward_hook = self.full_backward
        if m.training is not self.training:
            m.training = self.training
        if self.inplace is not None and m.inplace is not self.inplace:
            m.inplace = self.inplace


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Lock ``model``, put it in eval mode without in-place ops; restore everything on exit."""
    with model_lock(model):
        states = [_ModuleState.of(m) for m in model.modules()]
        grads = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for state in states:
                if state.training:
                    state.module.training = False
                if state.inplace:
                    state.module.inplace = False
            yield model
        finally:
            for state in states:
                state.restore()
            for param, flag in grads:
                if param.requires_grad != flag:
                    param.requires_grad_(flag)


def hooks_left(model: nn.Module) -> int:
    """How many module hooks are registered on ``model`` (tests and sanity checks use it)."""
    return sum(len(getattr(m, name, {}) or {}) for m in model.modules() for name in _HOOK_DICTS)
