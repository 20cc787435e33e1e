"""The runners: PyTorch, ONNX Runtime, LiteRT (or tflite_runtime), OpenVINO, TensorRT.

Each backend is imported when a runner is created, with an error naming the extra that installs it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import RunnerSpec
from .base import RUNNERS, Executed, ManifestRunner, RunnerInfo, RuntimeUnavailableError, dequantize, quantize, requested_precision


# ---------------------------------------------------------------------------------------------
# PyTorch: a run directory or weights file (no manifest; preprocessing from the model's variant)
# ---------------------------------------------------------------------------------------------


def torch_model_logits(model, images: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Float32 logits of an eval-mode PyTorch model on normalised NCHW images (export's reference)."""
    import torch

    model = model.eval()
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(images[i : i + chunk])).float().numpy()
                               for i in range(0, len(images), chunk)])


TORCH_DTYPES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float64": "fp64"}


@RUNNERS.register("torch", meta=RunnerInfo(("torch",), "PyTorch eager (the checkpoint itself); bf16: CPU/CUDA autocast",
                                           "core", runtime_precisions=("bf16",)))
class TorchRunner:
    name = "torch"

    def __init__(self, path: Path, spec: RunnerSpec | None = None, threads: int | None = None, device: str = "cpu",
                 precision: str | None = None, flush_denormals: bool = True) -> None:
        import torch

        from ..models import load_source

        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-model setting
        # Set before the first forward, so the intra-op threads it starts inherit the FPU mode. Denormals
        # cost 6x on a random-weight model (373 vs 61 ms, issue 9) and change no decision.
        # (process-wide, like the thread count).
        self.flush_denormals = bool(flush_denormals) and torch.set_flush_denormal(bool(flush_denormals))
        self.source = load_source(path)
        self.model = self.source.model.eval().to(device)
        self.device = device
        self.threads = threads
        if device == "cpu":
            self.precision = requested_precision(self.name, "fp32", precision)
        elif precision in (None, "fp32") or (precision == "bf16" and torch.cuda.is_bf16_supported()):
            self.precision = precision or "fp32"
        else:
            raise RuntimeUnavailableError(f"torch on {device} cannot run {precision}")
        self._autocast = torch.bfloat16 if self.precision == "bf16" else None
        variant = self.model.variant
        self.labels = self.source.labels or [str(i) for i in range(self.model.num_classes)]
        self.input = {"name": "input", "shape": ["batch", 3, variant.input_size, variant.input_size],
                      "layout": "NCHW", "dtype": "float32", "quantization": None}
        self.preprocessing = {"input_size": variant.input_size, "mean": list(variant.mean), "std": list(variant.std),
                              "crop_fraction": variant.crop_fraction, "interpolation": variant.interpolation}
        self.variant = variant.name
        self.executed = self._read_back_precision()

    def _read_back_precision(self) -> Executed:
        """One forward on a small input with hooks recording the dtype each conv / linear layer produced."""
        import torch

        seen: list[str] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(TORCH_DTYPES.get(str(out.dtype), str(out.dtype))))
                 for m in self.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        try:
            size = self.model.variant.input_size
            self._forward(torch.zeros(1, 3, size, size, device=self.device))
        finally:
            for hook in hooks:
                hook.remove()
        how = "autocast(bfloat16)" if self._autocast is not None else "eager"
        return Executed.count(seen, f"PyTorch {how}: output dtype of every Conv2d / Linear")

    def _forward(self, x):
        import torch

        with torch.inference_mode(), torch.autocast(x.device.type, dtype=self._autocast, enabled=self._autocast is not None):
            return self.model(x)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(images, dtype=np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        out = self._forward(torch.from_numpy(batch).to(self.device))
        if self.device != "cpu":
            torch.cuda.synchronize()
        return out.float().cpu().numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(images))


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------


# ONNX Runtime's compute ops after graph optimization, by the precision they run in.
ORT_INT8_OPS = {"QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul"}
ORT_FLOAT_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
ONNX_FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def ort_executed(optimized_model: Path) -> Executed:
    """Precision of each conv / matmul in the graph ONNX Runtime actually runs (after its fusions and
    the casts it inserts where a kernel has no fp16 version)."""
    import onnx

    model = onnx.load(str(optimized_model), load_external_data=False)
    types = {i.name: i.data_type for i in model.graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)})
    precisions = []
    for node in model.graph.node:
        if node.op_type in ORT_INT8_OPS:
            precisions.append("int8")
        elif node.op_type in ORT_FLOAT_OPS and len(node.input) > 1:
            precisions.append(ONNX_FLOAT_TYPES.get(types.get(node.input[1], 1), "fp32"))
    notes = ()
    if any(n.op_type == "Cast" for n in model.graph.node):
        notes = ("Cast nodes in the optimized graph: some tensors change precision at run time",)
    return Executed.count(precisions, "ONNX Runtime optimized graph (conv / gemm / matmul nodes)", notes)


@RUNNERS.register("onnxruntime", meta=RunnerInfo(("onnx",), "ONNX Runtime, CPU execution provider", "export"))
class OnnxRuntimeRunner(ManifestRunner):
    name = "onnxruntime"

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, precision: str | None = None,
                 flush_denormals: bool = True) -> None:
        super().__init__(path, spec, threads, precision)
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
        opts.add_session_config_entry("session.set_denormal_as_zero", "1" if flush_denormals else "0")
        self.flush_denormals = flush_denormals
        with tempfile.TemporaryDirectory(prefix="edgeinc-ort-") as tmp:
            # The graph ONNX Runtime optimized is where the executed precision can be read back.
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            try:
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e:
                raise RuntimeUnavailableError(f"{path}: ONNX Runtime cannot load it ({e})") from e
            self.executed = ort_executed(Path(opts.optimized_model_filepath))
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


TFLITE_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}
TFLITE_DTYPES = {"float32": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8", "int16": "int16"}


def litert_executed(interpreter) -> Executed:
    """Precision of each conv / fully connected op: the dtype of its input and weights tensors (an fp16
    file's weights are DEQUANTIZEd to float32 at load, so its convs read float32)."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    precisions = []
    for op in interpreter._get_ops_details():  # the interpreter's only op listing (used by LiteRT's own tools)
        if op["op_name"] in TFLITE_COMPUTE_OPS:
            inputs = [i for i in op["inputs"] if i >= 0][:2]
            names = {TFLITE_DTYPES.get(np.dtype(tensors[i]["dtype"]).name, np.dtype(tensors[i]["dtype"]).name) for i in inputs}
            precisions.append(names.pop() if len(names) == 1 else "+".join(sorted(names)))
    return Executed.count(precisions, "LiteRT interpreter: input and weight dtypes of each conv / fully connected op")


@RUNNERS.register("litert", meta=RunnerInfo(("tflite",), "LiteRT interpreter (XNNPACK), tflite_runtime fallback", "tflite"))
class LiteRTRunner(ManifestRunner):
    name = "litert"
    flush_denormals = None  # LiteRT has no switch for it

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, precision: str | None = None,
                 flush_denormals: bool = True) -> None:
        super().__init__(path, spec, threads, precision)
        self.interpreter = litert_interpreter(path, threads)
        self.executed = litert_executed(self.interpreter)
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


OPENVINO_HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}
OPENVINO_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}
OPENVINO_COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"}


def openvino_executed(compiled) -> Executed:
    """Precision of each conv / fully connected layer in the compiled model's runtime graph (what the
    CPU plugin executes: its ``runtimePrecision``), plus the inference precision it settled on."""
    precisions = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in OPENVINO_COMPUTE:
            raw = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            precisions.append(OPENVINO_PRECISIONS.get(raw, raw))
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return Executed.count(precisions, "OpenVINO runtime model (runtimePrecision of each conv / fully connected layer)",
                          (f"INFERENCE_PRECISION_HINT {hint}",))


@RUNNERS.register("openvino", meta=RunnerInfo(("onnx",), "OpenVINO runtime, CPU plugin (reads the ONNX)", "openvino",
                                              runtime_precisions=("bf16",)))
class OpenVINORunner(ManifestRunner):
    name = "openvino"

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, hint: str = "LATENCY",
                 precision: str | None = None, flush_denormals: bool = True) -> None:
        super().__init__(path, spec, threads, precision)
        if spec.quantizer == "tensorrt":
            # Measured: OpenVINO computes wrong outputs from ONNX Runtime's int8-activation Q/DQ graph.
            raise RuntimeUnavailableError(
                f"{path} is the TensorRT-flavour Q/DQ ONNX, which OpenVINO runs incorrectly; "
                f"use the --target onnx --precision int8 export (NNCF Q/DQ) with OpenVINO"
            )
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUnavailableError("openvino is not installed: pip install 'edgeinc[openvino]'") from None
        # The CPU plugin runs an fp32 model in bf16 wherever the CPU has bf16 unless told otherwise
        # (TOOLCHAIN trap 10): the precision is always set explicitly, and read back below.
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": OPENVINO_HINTS[self.precision],
                                  "CPU_DENORMALS_OPTIMIZATION": bool(flush_denormals)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.flush_denormals = flush_denormals
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as e:
            raise RuntimeUnavailableError(f"{path}: OpenVINO cannot load it ({e})") from e
        self.executed = openvino_executed(self.compiled)
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


def tensorrt_executed(engine, trt, built_precision: str) -> Executed:
    """Per-layer precisions from TensorRT's engine inspector (the ``Format/Datatype`` of each
    convolution / GEMM layer's first input; recorded when the engine was built with detailed profiling
    verbosity, as trt_engine.py does). Untested here: TensorRT is not installable in this workplace."""
    import json

    try:
        layers = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        layers = layers.get("Layers", []) if isinstance(layers, dict) else []
    except Exception:  # an engine built without detailed verbosity lists names only
        layers = []
    precisions = []
    for layer in layers:
        kind = str(layer.get("LayerType", "")) if isinstance(layer, dict) else ""
        if "Convolution" in kind or "Gemm" in kind or "MatrixMultiply" in kind:
            fmt = str((layer.get("Inputs") or [{}])[0].get("Format/Datatype", "")).lower()
            precisions.append(next((p for key, p in (("int8", "int8"), ("fp16", "fp16"), ("half", "fp16"),
                                                     ("bf16", "bf16"), ("fp32", "fp32"), ("float", "fp32")) if key in fmt), "?"))
    if not precisions:
        return Executed({}, "TensorRT engine (per-layer precisions not recorded)",
                        (f"strongly typed from the {built_precision} ONNX: TensorRT keeps the graph's types",))
    return Executed.count(precisions, "TensorRT engine inspector (input datatype of each conv / GEMM layer)")


@RUNNERS.register("tensorrt", meta=RunnerInfo(("tensorrt",), "TensorRT engine (10.x / 11.x), CUDA", "tensorrt"))
class TensorRTRunner(ManifestRunner):
    name = "tensorrt"
    flush_denormals = None

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, precision: str | None = None,
                 flush_denormals: bool = True) -> None:
        super().__init__(path, spec, threads, precision)  # GPU kernels: no denormal switch
        ok, why = tensorrt_available()
        if not ok:
            raise RuntimeUnavailableError(f"cannot run the TensorRT engine {path}: {why}")
        import tensorrt as trt
        import torch

        built = spec.engine.tensorrt_version if spec.engine else None
        if built and built != trt.__version__:  # a serialized engine runs only under the exact version
            raise RuntimeUnavailableError(
                f"{path} was built with TensorRT {built}; this machine has {trt.__version__}: rebuild it here "
                f"(python -m edgeinc.deploy.build_trt_engine {path.parent / 'manifest.json'})"
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
        # The engine's one optimization profile bounds the batch: larger batches are split (run()).
        self._max_batch = int(self.engine.get_tensor_profile_shape(self._in, 0)[2][0])
        self.executed = tensorrt_executed(self.engine, trt, self.precision)

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        if not self.context.set_input_shape(self._in, tuple(x.shape)):  # False, not an exception, in 10.x/11.x
            raise RuntimeError(f"{self.path}: TensorRT refused input shape {tuple(x.shape)} (profile: batch <= "
                               f"{self._max_batch})")
        y = torch.empty(tuple(self.context.get_tensor_shape(self._out)), dtype=self._out_dtype, device="cuda")
        self.context.set_tensor_address(self._in, x.data_ptr())
        self.context.set_tensor_address(self._out, y.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        self.stream.synchronize()
        return y.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# ExecuTorch (.pte): its Python runtime (executorch.runtime, which needs PyTorch)
# ---------------------------------------------------------------------------------------------

_EXECUTORCH_THREADS: int | None = None  # the process-wide XNNPACK thread pool, once set


def _executorch_threads(threads: int | None) -> None:
    """Size ExecuTorch's thread pool before the first program loads: it is one pool for the process, and
    resetting it after a method was loaded corrupts memory (measured: glibc aborts), so a second runner
    asking for another count is refused."""
    global _EXECUTORCH_THREADS
    if threads is None or threads == _EXECUTORCH_THREADS:
        return
    if _EXECUTORCH_THREADS is not None:
        raise RuntimeUnavailableError(
            f"ExecuTorch's thread pool is process-wide and already has {_EXECUTORCH_THREADS} threads; run the "
            f"{threads}-thread runner in another process (edgeinc bench measures each artifact in its own)"
        )
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)  # ExecuTorch's only switch for it (marked experimental)
    _EXECUTORCH_THREADS = threads


@RUNNERS.register("executorch", meta=RunnerInfo(("executorch",), "ExecuTorch runtime, XNNPACK delegate (.pte)", "executorch"))
class ExecuTorchRunner(ManifestRunner):
    name = "executorch"
    flush_denormals = None  # no switch in ExecuTorch

    def __init__(self, path: Path, spec: RunnerSpec, threads: int | None = None, precision: str | None = None,
                 flush_denormals: bool = True) -> None:
        super().__init__(path, spec, threads, precision)
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError:
            raise RuntimeUnavailableError("executorch is not installed: pip install 'edgeinc[executorch]'") from None
        _executorch_threads(threads)
        self._torch = torch
        try:
            # the program must stay referenced while its method lives (else: a use-after-free)
            self.program = Runtime.get().load_program(path)
            self.method = self.program.load_method("forward")
        except RuntimeError as e:
            raise RuntimeUnavailableError(f"{path}: ExecuTorch cannot load it ({e})") from e
        # ExecuTorch cannot report what its delegate's kernels run: what the .pte was built as
        self.executed = Executed({str(spec.precision): 1}, "the .pte's export precision (ExecuTorch has no "
                                 "read-back; the manifest counts its delegate calls)", (f"quantizer: {spec.quantizer or 'none'}",))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.method.execute([self._torch.from_numpy(np.ascontiguousarray(batch))])[0].numpy()
