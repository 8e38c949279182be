"""Checkpoints: the newest training state of a run, a stage or a unit, in safetensors + JSON.

A checkpoint folder holds `tensors.safetensors` and `state.json` and is written with
`io.atomic_folder`, so a crash at any point leaves one complete checkpoint (the new one, or
the previous one under `.checkpoint.old`). Every save carries the RNG states of python, numpy
(global and the owner's Generator) and torch, and `load` restores them, so a resumed run
continues the same random streams.

Training state has one key scheme for every system (`save(..., modules=, optimizers=,
generators=)` and `Checkpoint.restore`):

    module.<name>.<parameter or buffer>     a module's state dict (tied aliases stored once)
    optim.<name>.<param id>.<key>           an optimiser's tensor state (Adam's moments, step)
    generator.<name>                        a torch.Generator's state
    state.json["training"]                  optimisers' param groups and non-tensor state,
                                            numpy Generators' bit-generator states

Tests simulate a kill right after a checkpoint with `crash_after_checkpoint()`: the run stops
there as a killed process would, whatever the experiment, with no knowledge of its internals.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_folder, dumps_json, old_folder, read_json

FOLDER = "checkpoint"


class SimulatedCrash(BaseException):
    """Raised by the test hook `crash_after_checkpoint`; a BaseException, so no experiment's
    `except Exception` swallows it, as nothing catches a SIGKILL."""


_CRASH: dict[str, int | None] = {"after": None, "seen": 0}


@contextmanager
def crash_after_checkpoint(n: int = 1) -> Iterator[None]:
    """Within the block, the n-th checkpoint saved in this process (or in a process forked from
    it) raises SimulatedCrash once it is safely on disk."""
    _CRASH.update(after=n, seen=0)
    try:
        yield
    finally:
        _CRASH.update(after=None, seen=0)


def simulate_crash_now(where: str) -> None:
    """Crash here if a simulated crash is still pending (the run's last chance to stop before
    its results are written, for experiments that never checkpoint)."""
    if _CRASH["after"] is not None and _CRASH["seen"] < _CRASH["after"]:
        _CRASH["seen"] = _CRASH["after"]
        raise SimulatedCrash(f"simulated crash {where}")


def _after_save(folder: Path) -> None:
    if _CRASH["after"] is None:
        return
    _CRASH["seen"] += 1
    if _CRASH["seen"] == _CRASH["after"]:
        raise SimulatedCrash(f"simulated crash after checkpoint {folder}")


# ---------------------------------------------------------------------------------------
# training state: modules, optimisers, generators as flat named tensors + JSON


def module_tensors(module: Any) -> dict[str, Any]:
    """A module's state dict with tied aliases dropped (safetensors stores no shared memory)."""
    out, seen = {}, set()
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            continue  # e.g. lm_head.weight, tied to the embedding
        seen.add(key)
        out[name] = t
    return out


def load_module_tensors(module: Any, tensors: Mapping[str, Any]) -> None:
    """Load `module_tensors` output; a missing or unexpected name is one clear error."""
    missing, unexpected = module.load_state_dict(dict(tensors), strict=False)
    aliases = set(module.state_dict()) - set(module_tensors(module))
    if unexpected or set(missing) - aliases:
        raise AlignlabError(
            "The checkpoint does not fit this model: "
            f"missing {sorted(set(missing) - aliases)}, unexpected {sorted(unexpected)}."
        )


def _optimizer_state(opt: Any, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = opt.state_dict()
    tensors, extra = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{pid}.{key}"] = value
            else:
                extra.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": extra}


def _load_optimizer_state(opt: Any, tensors: Mapping[str, Any], meta: dict, prefix: str) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            pid, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value.clone()
    for pid, values in meta["state"].items():
        state.setdefault(int(pid), {}).update(values)
    # torch moves each moment to its parameter's device and dtype (Adam's step stays as saved)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def training_state(
    modules: Mapping[str, Any] | None = None,
    optimizers: Mapping[str, Any] | None = None,
    generators: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, JSON) of modules, optimisers and generators in the module docstring's scheme."""
    import torch

    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {"optimizers": {}, "generators": {}}
    for name, module in (modules or {}).items():
        tensors.update({f"module.{name}.{k}": v for k, v in module_tensors(module).items()})
    for name, opt in (optimizers or {}).items():
        t, m = _optimizer_state(opt, f"optim.{name}.")
        tensors.update(t)
        meta["optimizers"][name] = m
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            tensors[f"generator.{name}"] = gen.get_state()
        elif isinstance(gen, np.random.Generator):
            meta["generators"][name] = gen.bit_generator.state
        else:
            raise TypeError(f"generator {name!r}: expected a numpy or torch Generator")
    return tensors, meta


def restore_training_state(
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any],
    modules: Mapping[str, Any] | None = None,
    optimizers: Mapping[str, Any] | None = None,
    generators: Mapping[str, Any] | None = None,
) -> None:
    """Load what `training_state` saved into the same-named modules, optimisers, generators."""
    import torch

    for name, module in (modules or {}).items():
        prefix = f"module.{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_module_tensors(module, own)
    for name, opt in (optimizers or {}).items():
        _load_optimizer_state(opt, tensors, meta["optimizers"][name], f"optim.{name}.")
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            gen.set_state(tensors[f"generator.{name}"])
        else:
            gen.bit_generator.state = meta["generators"][name]


# ---------------------------------------------------------------------------------------
# checkpoints


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Any]  # name -> torch.Tensor
    state: dict[str, Any]  # JSON state of the training loop
    training: dict[str, Any] = field(default_factory=dict)  # see `training_state`

    def restore(
        self,
        modules: Mapping[str, Any] | None = None,
        optimizers: Mapping[str, Any] | None = None,
        generators: Mapping[str, Any] | None = None,
    ) -> None:
        """Load the saved modules, optimisers and generators into these same-named objects."""
        restore_training_state(self.tensors, self.training, modules, optimizers, generators)


class Checkpointer:
    """The newest checkpoint of a run, stage or unit: `<owner>/checkpoint/`.

    `rng` is the owner's numpy Generator (a run's `ctx.rng`), saved and restored with the
    global RNG states. Subclasses add their own state (`_state`) and act after each save
    (`on_save`).
    """

    def __init__(self, owner: str | Path, rng: np.random.Generator | None = None):
        self.dir = Path(owner) / FOLDER
        self.rng = rng

    def meta(self) -> dict[str, Any] | None:
        """The newest checkpoint's state.json (step, state, training, rng), without loading its
        tensors or restoring anything; None if there is none."""
        for d in (self.dir, old_folder(self.dir)):
            if (d / "state.json").is_file():
                try:
                    return read_json(d / "state.json")
                except (OSError, ValueError) as e:
                    raise AlignlabError(
                        f"Checkpoint in {d} is unreadable ({e}); use --force."
                    ) from e
        return None

    def last_step(self) -> int | None:
        """The step of the newest checkpoint, without loading it; None if there is none."""
        meta = self.meta()
        return None if meta is None else int(meta["step"])

    def _readable_dir(self) -> Path | None:
        for d in (self.dir, old_folder(self.dir)):
            if (d / "state.json").is_file():
                return d
        return None

    def save(
        self,
        step: int,
        tensors: Mapping[str, Any] | None = None,
        state: dict | None = None,
        *,
        modules: Mapping[str, Any] | None = None,
        optimizers: Mapping[str, Any] | None = None,
        generators: Mapping[str, Any] | None = None,
    ) -> None:
        import torch
        from safetensors.torch import save_file

        own, training = training_state(modules, optimizers, generators)
        clash = set(own) & set(tensors or {})
        if clash:
            raise ValueError(f"checkpoint tensor names used twice: {sorted(clash)[:3]}")
        merged = {**(tensors or {}), **own}
        out = {
            k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
            .detach()
            .cpu()
            .contiguous()
            for k, v in merged.items()
        }
        out["__rng__.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                out[f"__rng__.cuda.{i}"] = st
        meta = {
            "step": int(step),
            "state": self._state(state or {}),
            "training": training,
            "rng": self._rng_state(),
        }
        with atomic_folder(self.dir) as tmp:
            save_file(out, str(tmp / "tensors.safetensors"))
            # NaN stays a float here (a unit's buffered metric lines must come back as written)
            (tmp / "state.json").write_text(dumps_json(meta, False), encoding="utf-8")
        self.on_save(int(step))
        _after_save(self.dir)

    def on_save(self, step: int) -> None:
        """Called after every save (subclasses track progress with it)."""

    def _state(self, state: dict) -> dict:
        """The JSON state to store (subclasses add their own keys)."""
        return state

    def load(self) -> Checkpoint | None:
        """The newest checkpoint, with RNG states restored; None if there is none."""
        d = self._readable_dir()
        if d is None:
            return None
        import torch
        from safetensors.torch import load_file

        try:
            meta = read_json(d / "state.json")
            tensors = load_file(str(d / "tensors.safetensors"))
        except Exception as e:
            raise AlignlabError(f"Checkpoint in {d} is unreadable ({e}); use --force.") from e
        torch.set_rng_state(tensors.pop("__rng__.torch"))
        cuda = [tensors.pop(k) for k in sorted(tensors) if k.startswith("__rng__.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        self._restore_rng(meta["rng"])
        return Checkpoint(
            step=meta["step"],
            tensors=tensors,
            state=meta["state"],
            training=meta.get("training", {}),
        )

    def _rng_state(self) -> dict[str, Any]:
        py = random.getstate()
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        out = {
            "python": [py[0], list(py[1]), py[2]],
            "numpy_global": [name, keys.tolist(), pos, has_gauss, gauss],
        }
        if self.rng is not None:
            out["numpy"] = self.rng.bit_generator.state
        return out

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        name, keys, pos, has_gauss, gauss = rng["numpy_global"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if self.rng is not None and "numpy" in rng:
            self.rng.bit_generator.state = rng["numpy"]
