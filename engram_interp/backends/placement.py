"""Where a Hugging Face model's layers live, decided by accelerate (never by us): ``--device-map``,
``--max-memory`` and ``--offload-folder`` parsed and checked here (one-line errors), then handed to
``from_pretrained``; and the few places where we touch a weight outside a module's own forward
(the lens's unembedding, the frozen final norm, the NaN/Inf check) made to work when accelerate has
put that weight on another device or on disk.

accelerate's ``AlignDevicesHook`` wraps each placed module's ``forward``: it moves the inputs to the
module's execution device and, for an offloaded module, loads its weights from the offload map for
the call and drops them after. Our hook points sit on the modules as plain torch hooks, so they see
each value where its module produced it; a hook that returns a replacement may return it on any
device, as the next module moves its inputs itself.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from engram_interp.errors import EngramInterpError

__all__ = ["PLANS", "Placement", "execution_device", "offloaded_tensors", "onloaded", "parse_device_map",
           "parse_max_memory", "placement_of"]

PLANS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")  # accelerate's own placement plans
_DEVICE = re.compile(r"cpu|disk|cuda(:\d{1,3})?|\d{1,3}")


@dataclass(frozen=True)
class Placement:
    """What ``from_pretrained`` is given. ``device_map``: a plan name (:data:`PLANS`) or ``{module
    name: device}`` with devices ``cpu``, ``disk``, ``cuda:N`` or a GPU index; ``max_memory``:
    ``{"cpu" | GPU index: bytes}`` for the plans; ``offload_folder``: where accelerate writes the
    weights it puts on disk that it cannot read from the checkpoint's own safetensors."""

    device_map: str | dict[str, str | int]
    max_memory: dict[str | int, int] | None = None
    offload_folder: Path | None = None

    def uses_gpu(self) -> bool:
        """True when some layer may run on a GPU (a plan on a machine with CUDA, or a GPU entry)."""
        if isinstance(self.device_map, str):
            return self.device_map != "cpu" and torch.cuda.is_available()
        return any(str(d) not in ("cpu", "disk") for d in self.device_map.values())

    def kwargs(self) -> dict:
        """The keyword arguments of ``from_pretrained``."""
        kw: dict = {"device_map": self.device_map}
        if self.max_memory:
            kw["max_memory"] = dict(self.max_memory)
        if self.offload_folder is not None:
            kw["offload_folder"] = str(self.offload_folder)
        return kw


def parse_device_map(value: str | dict) -> str | dict[str, str | int]:
    """``auto|balanced|balanced_low_0|sequential|cpu``, a ``.json`` file holding ``{module: device}``,
    or such a dict -> what accelerate takes. A one-line EngramInterpError for anything else."""
    if isinstance(value, dict):
        return _check_map(value, "device_map")
    text = str(value)
    if text in PLANS:
        return text
    p = Path(text)
    if p.suffix.lower() != ".json" and not p.is_file():
        raise EngramInterpError(f"--device-map {text!r}: use one of {', '.join(PLANS)} or a .json file of "
                                "{module name: device}")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngramInterpError(f"--device-map: no such file: {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngramInterpError(f"--device-map: {p} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not raw:
        raise EngramInterpError(f"--device-map: {p} must hold a non-empty JSON object {{module name: device}}")
    return _check_map(raw, str(p))


def _check_map(raw: dict, where: str) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for name, dev in raw.items():
        if not isinstance(name, str) or (name and not re.fullmatch(r"[\w.]+", name)):
            raise EngramInterpError(f"{where}: {name!r} is not a module name (e.g. model.layers.3, lm_head)")
        if isinstance(dev, bool) or not (isinstance(dev, int) or isinstance(dev, str)) or not _DEVICE.fullmatch(str(dev)):
            raise EngramInterpError(f"{where}: device {dev!r} of {name!r} is not cpu, disk, cuda:N or a GPU index")
        out[name] = int(dev) if str(dev).isdigit() else dev
    return out


def parse_max_memory(value: str | dict) -> dict[str | int, int]:
    """``cpu=64GiB,0=70GiB`` (or such a dict) -> ``{"cpu": bytes, 0: bytes}``; sizes as accelerate
    reads them (``GiB``/``GB``/``MiB``/``MB`` or bytes). A one-line EngramInterpError otherwise."""
    from accelerate.utils import convert_file_size_to_int

    pairs = value.items() if isinstance(value, dict) else [_pair(part) for part in str(value).split(",")]
    out: dict[str | int, int] = {}
    for key, size in pairs:
        key = str(key).strip()
        if not re.fullmatch(r"cpu|\d{1,3}", key):
            raise EngramInterpError(f"--max-memory: {key!r} is not cpu or a GPU index (e.g. cpu=64GiB,0=70GiB)")
        try:
            n = convert_file_size_to_int(size.strip() if isinstance(size, str) else int(size))
        except (ValueError, TypeError):
            n = -1
        if n <= 0:
            raise EngramInterpError(f"--max-memory: {size!r} for {key} is not a size (e.g. 64GiB, 500MB)")
        out["cpu" if key == "cpu" else int(key)] = n
    return out


def _pair(part: str) -> tuple[str, str]:
    if part.count("=") != 1:
        raise EngramInterpError(f"--max-memory: {part!r} is not DEVICE=SIZE (e.g. cpu=64GiB,0=70GiB)")
    key, size = part.split("=")
    return key, size


def placement_of(device_map=None, max_memory=None, offload_folder=None, device=None) -> Placement | None:
    """The checked :class:`Placement` of ``ei.load``'s / the CLI's arguments, or None when no device
    map is given (then ``device`` places the whole model). One-line errors for flags that need a
    device map, a GPU that is not there, and ``disk`` entries without an offload folder."""
    if device_map is None:
        for flag, v in (("--max-memory", max_memory), ("--offload-folder", offload_folder)):
            if v is not None:
                raise EngramInterpError(f"{flag} needs --device-map (accelerate places the layers)")
        return None
    if device is not None:
        raise EngramInterpError("--device and --device-map exclude each other (--device-map cpu puts every layer on the CPU)")
    dm = parse_device_map(device_map)
    mm = None if max_memory is None else parse_max_memory(max_memory)
    gpus = [d for d in (dm.values() if isinstance(dm, dict) else []) if str(d) not in ("cpu", "disk")]
    gpus += [k for k in (mm or {}) if k != "cpu"]
    for d in gpus:
        index = int(str(d).split(":")[1]) if str(d).startswith("cuda:") else (0 if d == "cuda" else int(d))
        if index >= torch.cuda.device_count():
            raise EngramInterpError(f"--device-map/--max-memory name GPU {index}, but this machine has "
                                    f"{torch.cuda.device_count()}")
    folder = None if offload_folder is None else Path(offload_folder)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise EngramInterpError(f"--offload-folder: {folder} exists and is not a folder")
    if folder is None and isinstance(dm, dict) and "disk" in dm.values():
        raise EngramInterpError("the device map puts modules on disk: give --offload-folder DIR")
    return Placement(dm, mm, folder)


# ------------------------------------------------------------------------------ placed modules
def _align_hooks(module: nn.Module):
    """The accelerate ``AlignDevicesHook`` s on ``module`` itself (none when it is not placed)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return [h for h in getattr(hook, "hooks", (hook,)) if hasattr(h, "execution_device")]


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate execution device, else where its first weight is."""
    for h in _align_hooks(module):
        if h.execution_device is not None:
            dev = h.execution_device
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    t = next(iter(module.parameters()), None)
    return t.device if t is not None else torch.device("cpu")


@contextlib.contextmanager
def onloaded(module: nn.Module) -> Iterator[nn.Module]:
    """Within the context, the weights of ``module`` and its submodules that accelerate offloaded
    (to the CPU or to disk) are real tensors on their execution device; they go back to ``meta``
    after. Tensors read inside stay valid after the context. A no-op for a module in memory."""
    loaded = []
    try:
        for sub in module.modules():
            for h in _align_hooks(sub):
                if getattr(h, "offload", False):
                    h._onload_weights(sub)
                    loaded.append((h, sub))
        yield module
    finally:
        for h, sub in reversed(loaded):
            h._offload_weights(sub)


def offloaded_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every weight accelerate keeps off-device (read one at a time from its
    offload map: CPU memory or disk); nothing for a model in memory."""
    for prefix, sub in model.named_modules():
        for h in _align_hooks(sub):
            if getattr(h, "offload", False) and h.weights_map is not None:
                for name, _ in sub.named_parameters(recurse=getattr(h, "place_submodules", False)):
                    yield (f"{prefix}.{name}" if prefix else name), h.weights_map[name]


@contextlib.contextmanager
def offload_scratch(placement: Placement | None) -> Iterator[dict]:
    """``from_pretrained``'s placement keyword arguments, with the offload folder replaced by a fresh
    ``engram-interp-offload-*`` folder inside it (so no file of the user's is ever overwritten),
    removed when the process exits (at once when the load fails). ``{}`` without a placement."""
    import atexit
    import shutil
    import tempfile

    if placement is None:
        yield {}
        return
    kw = placement.kwargs()
    scratch = None
    if placement.offload_folder is not None:
        try:
            placement.offload_folder.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix="engram-interp-offload-", dir=placement.offload_folder)
        except OSError as exc:
            raise EngramInterpError(f"--offload-folder {placement.offload_folder}: cannot write there "
                                    f"({exc.strerror or type(exc).__name__})") from None
        kw["offload_folder"] = scratch
        atexit.register(shutil.rmtree, scratch, True)
    try:
        yield kw
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, True)
        raise


def summary(model: nn.Module) -> dict[str, int]:
    """``{device: number of top-level placed modules}`` from accelerate's ``hf_device_map``, or
    ``{device: 0}`` for a model that sits whole on one device (not placed)."""
    dm = getattr(model, "hf_device_map", None)
    if not dm:
        t = next(iter(model.parameters()), None)
        return {str(t.device if t is not None else "cpu"): 0}
    out: dict[str, int] = {}
    for dev in dm.values():
        key = f"cuda:{dev}" if isinstance(dev, int) else str(dev)
        out[key] = out.get(key, 0) + 1
    return out
