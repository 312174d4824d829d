"""A second device on a CPU-only torch, so CI catches host/device mixes without a GPU.

    with SimulatedAccelerator() as device:      # device == torch.device("meta")
        model.to(device)                        # parameters now "live on the accelerator"
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
        trainer.train_step()                    # raises where real CUDA would raise

Tensors "on the accelerator" are `DeviceTensor`s: wrapper tensors whose `.device` is `meta` but which hold real CPU
data, so every op runs for real (`.item()`, `nonzero`, `unique`, autograd, AdamW all work). A dispatch mode checks
each op the way CUDA does and raises `DeviceMismatch` where real CUDA raises "Expected all tensors to be on the same
device":

* an op mixing an accelerator tensor with a host tensor of one or more dimensions (0-dim host tensors are allowed,
  as on CUDA); copies and `.to()` are the allowed crossings, and so is indexing an accelerator tensor with host
  indices (CUDA moves them), but not a host tensor with accelerator indices;
* a random op whose `generator` lives on the other side (CUDA: "Expected a 'cuda' device type for generator");
* `.numpy()` of an accelerator tensor.

Why `meta` and not a fake `cuda`: a CPU-only build cannot even index a wrapper tensor that claims to be on cuda (it
has no cuda device guard), while `meta` has one. Code that branches on `device.type == "cuda"` takes its non-CUDA
branch here; that is fine for what this checks (where tensors live), not for CUDA-only features.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
DEVICE = torch.device("meta")
_RealGenerator = torch.Generator


class DeviceMismatch(RuntimeError):
    """Raised where real CUDA would refuse to mix devices."""


class DeviceTensor(torch.Tensor):
    """A tensor that reports the simulated accelerator as its device and keeps its data in a CPU tensor `elem`."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"DeviceTensor({self.elem!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist:  # torch refuses .tolist() on subclasses; on CUDA it copies to the host
            return args[0].elem.tolist()
        if func is torch.Tensor.new_tensor:  # C++ would build a data-less meta tensor: build it on the CPU instead
            self, data = args[0], args[1]
            dtype = kwargs.get("dtype") or (self.dtype if not isinstance(data, torch.Tensor) else data.dtype)
            return DeviceTensor(torch.tensor(data, dtype=dtype)).requires_grad_(kwargs.get("requires_grad", False))
        if func is torch.Tensor.numpy:
            raise DeviceMismatch("can't convert an accelerator tensor to numpy; use .cpu() first")
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("a DeviceTensor was used outside SimulatedAccelerator")


class _AcceleratorGenerator(_RealGenerator):
    """A random generator that says it lives on the accelerator (its state is a CPU generator's)."""

    @property
    def device(self) -> torch.device:
        return DEVICE


class _GeneratorFactory(_RealGenerator):
    """Stands in for torch.Generator while simulating: Generator(device=accelerator) gives an accelerator one."""

    def __new__(cls, device="cpu"):
        return _AcceleratorGenerator() if torch.device(device) == DEVICE else _RealGenerator(device)


def _on_device(value) -> bool:
    return value is not None and torch.device(value) == DEVICE


class _PythonLevelChecks(TorchFunctionMode):
    """What must be seen before dispatch: the Python generator object, torch.tensor(..., device=accelerator)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if generator is not None:
            flat, _ = tree_flatten((args, kwargs))
            on_device = any(isinstance(t, DeviceTensor) for t in flat) or _on_device(kwargs.get("device"))
            if isinstance(generator, _AcceleratorGenerator) != on_device:
                side = lambda acc: "the accelerator" if acc else "the host"
                raise DeviceMismatch(f"{getattr(func, '__name__', func)}: generator on "
                                     f"{side(isinstance(generator, _AcceleratorGenerator))}, tensors on {side(on_device)}")
        if func in (torch.tensor, torch.as_tensor) and _on_device(kwargs.get("device")):
            requires_grad = bool(kwargs.get("requires_grad", False))
            kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "requires_grad")}
            return func(*args, **kwargs).to(DEVICE).requires_grad_(requires_grad)
        return func(*args, **kwargs)


_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}
_CROSSINGS = {aten._to_copy.default, aten.copy_.default}


class SimulatedAccelerator(TorchDispatchMode):
    """Context manager: inside it `torch.device("meta")` behaves as a second device with real data (module docstring)."""

    def __enter__(self) -> torch.device:
        self._python_checks = _PythonLevelChecks()
        self._python_checks.__enter__()
        torch.Generator = _GeneratorFactory
        # module.to(device) swaps each parameter's contents in place, as on CUDA, so tied weights stay tied
        self._swap = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        super().__enter__()
        return DEVICE

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            torch.Generator = _RealGenerator
            torch.__future__.set_swap_module_params_on_conversion(self._swap)
            self._python_checks.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        on_device = any(isinstance(t, DeviceTensor) for t in tensors)
        if any(t.device == DEVICE and not isinstance(t, DeviceTensor) for t in tensors):
            raise RuntimeError(f"{func}: a meta tensor without data reached the simulation; teach "
                               "tests/simulated_device.py to build it on the CPU")
        to_device = _on_device(kwargs.get("device"))
        if on_device and func not in _CROSSINGS:
            self._check_same_device(func, args, tensors)
        unwrap = lambda t: t.elem if isinstance(t, DeviceTensor) else t
        args_cpu, kwargs_cpu = tree_map(unwrap, args), tree_map(unwrap, kwargs)
        if "device" in kwargs_cpu and kwargs_cpu["device"] is not None:
            kwargs_cpu["device"] = torch.device("cpu") if to_device else kwargs_cpu["device"]
        out = func(*args_cpu, **kwargs_cpu)
        if func is aten.copy_.default:
            return args[0]
        if func is aten._to_copy.default:
            wrap = to_device or (on_device and kwargs.get("device") is None)
        else:
            wrap = on_device or to_device
        return tree_map(lambda t: DeviceTensor(t) if wrap and type(t) is torch.Tensor else t, out)

    @staticmethod
    def _check_same_device(func, args, tensors) -> None:
        if func in _INDEXING:  # CUDA moves host indices to the indexed tensor's device, never the other way
            if isinstance(args[0], DeviceTensor):
                return
            raise DeviceMismatch(f"Expected all tensors to be on the same device ({func}): a host tensor indexed "
                                 "with accelerator indices")
        host = [t for t in tensors if not isinstance(t, DeviceTensor) and t.dim() > 0]
        if host:
            raise DeviceMismatch(f"Expected all tensors to be on the same device ({func}): a host tensor of shape "
                                 f"{tuple(host[0].shape)} meets accelerator tensors")
