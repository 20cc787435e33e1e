"""The runners: PyTorch, ONNX Runtime, LiteRT (or tflite_runtime), OpenVINO, TensorRT.

Each backend is imported when a runner is created, with an error naming the extra that installs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import RUNNERS, ManifestRunner, RunnerInfo, RuntimeUnavailableError, dequantize, quantize


# ---------------------------------------------------------------------------------------------
# PyTorch: a run directory or weights file (no manifest; preprocessing from the model's variant)
# ---------------------------------------------------------------------------------------------


@RUNNERS.register("torch", meta=RunnerInfo(("torch",), "PyTorch eager, fp32 (the checkpoint itself)", "core"))
class TorchRunner:
    name = "torch"

    def __init__(self, path: Path, manifest: Any = None, threads: int | None = None, device: str = "cpu") -> None:
        import torch

        from ..models import load_source

        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-model setting
        self.source = load_source(path)
        self.model = self.source.model.eval().to(device)
        self.device = device
        self.threads = threads
        variant = self.model.variant
        self.labels = self.source.labels or [str(i) for i in range(self.model.num_classes)]
        self.input = {"name": "input", "shape": ["batch", 3, variant.input_size, variant.input_size],
                      "layout": "NCHW", "dtype": "float32", "quantization": None}
        self.preprocessing = {"input_size": variant.input_size, "mean": list(variant.mean), "std": list(variant.std),
                              "crop_fraction": variant.crop_fraction, "interpolation": variant.interpolation}
        self.manifest = None

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images, dtype=np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
            if self.device != "cpu":
                torch.cuda.synchronize()
            return out.float().cpu().numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(images))


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------


@RUNNERS.register("onnxruntime", meta=RunnerInfo(("onnx",), "ONNX Runtime, CPU execution provider", "export"))
class OnnxRuntimeRunner(ManifestRunner):
    name = "onnxruntime"

    def __init__(self, path: Path, manifest: Any, threads: int | None = None) -> None:
        super().__init__(path, manifest, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailableError("onnxruntime is not installed: pip install 'edgeinc[export]'") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeUnavailableError(f"{path}: ONNX Runtime cannot load it ({e})") from e
        self._input_name = self.session.get_inputs()[0].name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0]


# ---------------------------------------------------------------------------------------------
# LiteRT (ai-edge-litert), falling back to tflite_runtime
# ---------------------------------------------------------------------------------------------


def litert_interpreter(path: Path, threads: int | None = None):
    """A LiteRT Interpreter, or tflite_runtime's where only that exists (same API)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailableError(
                "neither ai-edge-litert nor tflite_runtime is installed: pip install 'edgeinc[tflite]'"
            ) from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RuntimeUnavailableError(f"{path}: the TFLite interpreter cannot load it ({e})") from e
    return interpreter


def _quant(detail: dict) -> dict | None:
    scale, zero_point = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def litert_io(interpreter) -> tuple[dict, dict]:
    """The interpreter's input and output as manifest tensor specs (NHWC)."""
    specs = []
    for detail, layout in ((interpreter.get_input_details()[0], "NHWC"), (interpreter.get_output_details()[0], "NC")):
        specs.append({
            "name": detail["name"], "shape": [int(v) for v in detail["shape"]], "layout": layout,
            "dtype": np.dtype(detail["dtype"]).name, "quantization": _quant(detail),
        })
    return specs[0], specs[1]


def litert_invoke(interpreter, batch: np.ndarray) -> np.ndarray:
    """One native batch (already in the interpreter's shape and dtype) -> raw output array."""
    inp = interpreter.get_input_details()[0]
    if list(inp["shape"]) != list(batch.shape):
        interpreter.resize_tensor_input(inp["index"], list(batch.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def litert_predict(path: Path, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Normalised NCHW float32 images -> float logits through a .tflite file, one image at a time,
    with the file's own input/output quantization (used by export's parity checks)."""
    interpreter = litert_interpreter(path, threads)
    in_spec, out_spec = litert_io(interpreter)
    outs = []
    for image in images:
        x = quantize(image.transpose(1, 2, 0)[None], in_spec["quantization"], in_spec["dtype"])
        outs.append(dequantize(litert_invoke(interpreter, x), out_spec["quantization"]))
    return np.concatenate(outs)


@RUNNERS.register("litert", meta=RunnerInfo(("tflite",), "LiteRT interpreter (XNNPACK), tflite_runtime fallback", "tflite"))
class LiteRTRunner(ManifestRunner):
    name = "litert"

    def __init__(self, path: Path, manifest: Any, threads: int | None = None) -> None:
        super().__init__(path, manifest, threads)
        self.interpreter = litert_interpreter(path, threads)
        detail = self.interpreter.get_input_details()[0]
        if np.dtype(detail["dtype"]).name != self.input["dtype"]:
            raise RuntimeUnavailableError(
                f"{path}: input dtype {np.dtype(detail['dtype']).name} does not match the manifest's {self.input['dtype']}"
            )
        # onnx2tf fixes the batch; a dynamic one can still be resized, but chunks of 1 always work.
        signature = detail.get("shape_signature", detail["shape"])
        self._resizable = int(signature[0]) == -1

    @property
    def fixed_batch(self) -> int | None:
        return None if self._resizable else int(self.interpreter.get_input_details()[0]["shape"][0])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return litert_invoke(self.interpreter, batch)


# ---------------------------------------------------------------------------------------------
# OpenVINO: reads the ONNX (fp32, fp16, or NNCF's Q/DQ, which it runs on int8 kernels)
# ---------------------------------------------------------------------------------------------


@RUNNERS.register("openvino", meta=RunnerInfo(("onnx",), "OpenVINO runtime, CPU plugin (reads the ONNX)", "openvino"))
class OpenVINORunner(ManifestRunner):
    name = "openvino"

    def __init__(self, path: Path, manifest: Any, threads: int | None = None, hint: str = "LATENCY") -> None:
        super().__init__(path, manifest, threads)
        flavour = (manifest.quantization or {}).get("flavour")
        if flavour == "tensorrt":
            # Measured: OpenVINO computes wrong outputs from ONNX Runtime's int8-activation Q/DQ graph.
            raise RuntimeUnavailableError(
                f"{path} is the TensorRT-flavour Q/DQ ONNX, which OpenVINO runs incorrectly; "
                f"use the --target onnx --precision int8 export (NNCF Q/DQ) with OpenVINO"
            )
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUnavailableError("openvino is not installed: pip install 'edgeinc[openvino]'") from None
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as e:
            raise RuntimeUnavailableError(f"{path}: OpenVINO cannot load it ({e})") from e
        self.request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.request.infer({0: batch})[self._output].copy()


# ---------------------------------------------------------------------------------------------
# TensorRT (on a machine with TensorRT and a CUDA device); buffers through PyTorch's CUDA allocator
# ---------------------------------------------------------------------------------------------


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) where TensorRT and a CUDA device are present, else (False, what is missing)."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt, from NVIDIA's index)"
    import torch

    if not torch.cuda.is_available():
        return False, f"TensorRT {trt.__version__} is installed but no CUDA device is available"
    return True, trt.__version__


@RUNNERS.register("tensorrt", meta=RunnerInfo(("tensorrt",), "TensorRT engine (10.x / 11.x), CUDA", "tensorrt"))
class TensorRTRunner(ManifestRunner):
    name = "tensorrt"

    def __init__(self, path: Path, manifest: Any, threads: int | None = None) -> None:
        super().__init__(path, manifest, threads)
        ok, why = tensorrt_available()
        if not ok:
            raise RuntimeUnavailableError(f"cannot run the TensorRT engine {path}: {why}")
        import tensorrt as trt
        import torch

        built = (manifest.engine or {}).get("tensorrt_version")
        if built and built.split(".")[:2] != trt.__version__.split(".")[:2]:
            raise RuntimeUnavailableError(
                f"{path} was built with TensorRT {built}; this machine has {trt.__version__}: rebuild it here"
            )
        self._torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeUnavailableError(f"{path}: TensorRT could not deserialize the engine (wrong GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._out = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._out_dtype = getattr(torch, np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._out))).name)
        self.stream = torch.cuda.Stream()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        self.context.set_input_shape(self._in, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(self._out)), dtype=self._out_dtype, device="cuda")
        self.context.set_tensor_address(self._in, x.data_ptr())
        self.context.set_tensor_address(self._out, y.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        self.stream.synchronize()
        return y.float().cpu().numpy()
