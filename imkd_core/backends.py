"""Inference backends: what `DetectorPipeline.infer` runs between preprocessing and decoding.

- `TorchBackend`: the eager model (a checkpoint); returns the head maps and the BEV features.
- `TorchScriptBackend`, `OnnxRuntimeBackend`: a file of `imkd export` (`imkd_core.export`);
  they return the head maps only, which is all decoding reads.

`open_backend(path, backend, device)` picks by the file's content and refuses, naming the file,
a file the requested backend cannot run, a device its runtime lacks (`cuda` without
onnxruntime's CUDA execution provider) and an export of another format version. On `cuda`,
ONNX Runtime gets TensorRT's execution provider first when it is installed (nodes TensorRT
cannot take fall back to CUDA, then CPU).
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import nn

from imkd_core.device import resolve_device
from imkd_core.export import (
    INPUTS,
    OUTPUTS,
    ExportError,
    ExportInfo,
    export_kind,
    flat_inputs,
    geometry_lift,
    read_export,
)

BACKENDS = ("torch", "onnxruntime")
ORT_INSTALL_HINT = ("pip install onnxruntime-gpu (CUDA; TensorRT's provider also needs "
                    "TensorRT's libraries)")


class Backend(Protocol):
    kind: str  # the model kind: "student" or "teacher"
    device: torch.device  # where the pipeline puts the input tensors
    label: str  # for logs: what runs where

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class TorchBackend:
    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model
        self.kind = getattr(model, "kind", "student")
        self.device = device
        self.label = f"torch eager on {device}"

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(batch)


class _ExportedBackend:
    """Shared by the exported-file backends: the batch -> flat inputs (lift-splat tables
    cached per calibration on the host, as the eager path caches them) and the checks that
    the batch is what the file was exported for."""

    kind = "student"

    def __init__(self, path: str | os.PathLike, info: ExportInfo):
        self.path = str(path)
        self.info = info
        self.lift = geometry_lift(info.config)

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        expected = (1, len(self.info.cameras), 3, *self.info.image_size)
        if tuple(images.shape) != expected:
            raise ExportError(f"{self.path}: exported for images {expected} (batch 1, cameras "
                              f"{list(self.info.cameras)}), got {tuple(images.shape)}")
        return flat_inputs(batch, self.lift)


class TorchScriptBackend(_ExportedBackend):
    def __init__(self, path: str | os.PathLike, info: ExportInfo, device: torch.device):
        super().__init__(path, info)
        self.device = device
        self.module = torch.jit.load(str(path), map_location=device).eval()
        self.label = f"TorchScript on {device}"

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = self.inputs(batch)
        outputs = self.module(*(inputs[name].to(self.device) for name in INPUTS))
        return dict(zip(OUTPUTS, outputs, strict=True))


def ort_providers(path: str | os.PathLike, device: str) -> list[str]:
    """The execution providers for `device` ("auto", "cpu", "cuda"), best first; a clear error
    when `cuda` is asked for and onnxruntime has no CUDA provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [*gpu, "CPUExecutionProvider"] if "CUDAExecutionProvider" in gpu \
            else ["CPUExecutionProvider"]
    if torch.device(device).type != "cuda":
        raise ExportError(f"{path}: device must be auto, cpu or cuda, not {device!r}")
    if "CUDAExecutionProvider" not in gpu:
        raise ExportError(f"{path}: device {device!r} needs onnxruntime's "
                          f"CUDAExecutionProvider; this onnxruntime {ort.__version__} has "
                          f"{available} ({ORT_INSTALL_HINT})")
    return [*gpu, "CPUExecutionProvider"]


class OnnxRuntimeBackend(_ExportedBackend):
    def __init__(self, path: str | os.PathLike, info: ExportInfo, device: str = "auto",
                 threads: int | None = None):
        import onnxruntime as ort

        super().__init__(path, info)
        providers = ort_providers(path, device)
        options = ort.SessionOptions()
        # as many threads as torch uses (OMP_NUM_THREADS sets both). With one thread a run is
        # reproducible bit for bit; with more, the CPU ScatterND(add) of the BEV pooling sums
        # in thread-schedule order, so two runs can differ in the last bits.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: it would take the cores from the node's other threads
        # (and from torch: the benchmark saw eager 4x slower next to a spinning session)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(self.path, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own (pybind) exception types
            raise ExportError(f"{path}: onnxruntime cannot load it: "
                              f"{str(exc).splitlines()[0]}") from exc
        used = self.session.get_providers()
        if device not in ("cpu", "auto") and "CUDAExecutionProvider" not in used:
            raise ExportError(f"{path}: onnxruntime did not enable CUDAExecutionProvider "
                              f"(got {used}; {ORT_INSTALL_HINT})")
        self.providers = used
        self.input_names = [i.name for i in self.session.get_inputs()]  # unused ones pruned
        self.device = torch.device("cpu")  # inputs go in as numpy arrays
        self.label = f"onnxruntime {ort.__version__} {used[0]}"

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = self.inputs(batch)
        feed = {name: inputs[name].cpu().numpy() for name in self.input_names}
        outputs = self.session.run(list(OUTPUTS), feed)
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUTS, outputs,
                                                                     strict=True)}


def open_exported(path: str | os.PathLike, backend: str, device: str) -> _ExportedBackend:
    """The backend for exported file `path`; ExportError naming the file and the mismatch."""
    if backend not in BACKENDS:
        raise ExportError(f"backend must be one of {list(BACKENDS)}, not {backend!r}")
    kind = export_kind(path)
    wants = {"onnx": "onnxruntime", "torchscript": "torch", "checkpoint": "torch"}[kind]
    if backend != wants:
        what = {"onnx": "an ONNX export", "torchscript": "a TorchScript export",
                "checkpoint": "a checkpoint"}[kind]
        needs = ("an ONNX file (imkd export --format onnx)" if backend == "onnxruntime"
                 else "a checkpoint or a TorchScript export")
        raise ExportError(f"{path}: {what}, which backend {wants!r} runs; backend "
                          f"{backend!r} needs {needs}")
    if kind == "checkpoint":
        raise ExportError(f"{path}: a checkpoint, not an exported model")
    info = read_export(path)
    if kind == "onnx":
        return OnnxRuntimeBackend(path, info, device)
    return TorchScriptBackend(path, info, resolve_device(device))


__all__ = ["BACKENDS", "Backend", "OnnxRuntimeBackend", "TorchBackend", "TorchScriptBackend",
           "open_exported", "ort_providers"]
