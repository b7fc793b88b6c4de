"""Leaving a model as it was found: one mechanism for every probe, trainer and initialiser."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["buffers_kept", "evaluating"]


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Restore the model's buffers (e.g. batch-norm running statistics) after the block, by name:
    a buffer the block changed gets its old value back (the old tensor, if the block resized or
    replaced it), and a buffer the block created (a cache some models build in ``forward``) is
    removed again."""
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in list(model.named_buffers()):
                owner, _, attribute = name.rpartition(".")
                module = model.get_submodule(owner) if owner else model
                if name not in saved:
                    del module._buffers[attribute]
                elif (
                    buffer is not None
                    and buffer.shape == saved[name].shape
                    and buffer.dtype == saved[name].dtype
                ):
                    buffer.copy_(saved[name])
                else:
                    module._buffers[attribute] = saved[name]
            for name, value in saved.items():  # a buffer the block deleted
                owner, _, attribute = name.rpartition(".")
                module = model.get_submodule(owner) if owner else model
                if module._buffers.get(attribute) is None:
                    module._buffers[attribute] = value


@contextlib.contextmanager
def evaluating(model: nn.Module, on: bool = True) -> Iterator[None]:
    """``model.eval()`` for the block (batch norm normalises with its running statistics, dropout
    is off), then every module's own ``training`` flag back as it was; ``on=False`` changes
    nothing."""
    modes = {module: module.training for module in model.modules()}
    if on:
        model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
