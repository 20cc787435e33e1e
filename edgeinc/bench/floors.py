"""Compute floors: the fastest a model of M multiply-adds could run here, per precision.

A floor is M / (the best multiply-add rate that any installed runtime reaches on this CPU), measured
on the kernels an Inception network is made of - batched convolutions (3x3, 1x1 and 1x7 on the 35,
17 and 8 grids) and one large GEMM - in every runtime that is installed and executes that precision
(PyTorch, ONNX Runtime, OpenVINO). Each convolution is timed as a chain of CHAIN_LENGTH of them (with
ReLU, and for int8 quantized between them), as they run inside a network: a lone convolution also pays
for converting its float input and output (layout, and for int8 the quantize / dequantize), which cost
about 8% of an int8 kernel, enough for OpenVINO's INT8 Inception-v3 to beat a single-conv floor.
One library's GEMM is not a floor: on a Zen 5 a torch matmul gave 52 GMAC/s fp32 while ONNX Runtime
ran the whole Inception-v3 at ~215 GMAC/s, and ONNX Runtime's int8 MatMulInteger 307 GMAC/s while
OpenVINO's INT8 Inception-v3 ran at ~790 (issue 9). A model row faster than its floor is a
measurement error and is flagged, never printed as a ratio below 1.

Beside each floor: the ISA's theoretical peak from the CPU flags, the clock /proc/cpuinfo reports and
the threads used, assuming two full-width FMA (or dot-product) units per core - an upper bound that
real kernels do not reach (Zen 4 runs AVX-512 on 256-bit units; a VM's reported clock is nominal).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..utils.cpu import all_flags, cpuinfo, has_native_bf16

DTYPES = ("fp32", "bf16", "int8")

# (batch, channels in, channels out, grid, kernel (h, w)): Inception-v3's own conv shapes, batched so
# that the kernels reach their best rate.
CONV_SHAPES = (
    (8, 192, 192, 35, (3, 3)),  # Mixed_5x 3x3 branches
    (8, 768, 192, 17, (1, 1)),  # Mixed_6x 1x1 branches
    (8, 160, 160, 17, (1, 7)),  # Mixed_6x factorized 7x7
    (8, 1280, 384, 8, (1, 1)),  # Mixed_7x
)
GEMM_SIZE = 2048
CHAIN_LENGTH = 6  # convolutions per timed graph: the float I/O conversion is amortized over them


@dataclass(frozen=True)
class KernelRate:
    dtype: str
    runtime: str
    kernel: str
    macs: int
    seconds: float  # best of the timed repeats

    @property
    def rate(self) -> float:
        return self.macs / self.seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "gmacs_per_s": self.rate / 1e9}


@dataclass
class Floors:
    threads: int
    measured: list[KernelRate] = field(default_factory=list)
    isa_peak: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "dtype runtime" -> why

    def best(self, dtype: str) -> KernelRate | None:
        rates = [k for k in self.measured if k.dtype == dtype]
        return max(rates, key=lambda k: k.rate) if rates else None

    def floor_ms(self, dtype: str, macs: int, batch: int) -> float | None:
        best = self.best(dtype)
        return None if best is None else macs * batch / best.rate * 1e3

    def to_dict(self) -> dict:
        return {
            "threads": self.threads,
            "best": {d: b.to_dict() for d in DTYPES if (b := self.best(d)) is not None},
            "measured": [k.to_dict() for k in self.measured],
            "isa_peak": self.isa_peak,
            "skipped": self.skipped,
        }

    def describe(self) -> list[str]:
        lines = []
        for d in DTYPES:
            best, peak = self.best(d), self.isa_peak.get(d)
            peak_text = f"; ISA peak {peak['gmacs_per_s']:.0f} GMAC/s ({peak['assumes']})" if peak else ""
            if best is None:
                lines.append(f"{d}: no kernel measured ({self.skipped.get(d, 'no runtime executes it here')}){peak_text}")
            else:
                lines.append(f"{d}: {best.rate / 1e9:.1f} GMAC/s ({best.runtime}, {best.kernel}){peak_text}")
        return lines


# -- the ISA's theoretical peak ----------------------------------------------------------------------


def isa_peak(threads: int) -> dict[str, dict]:
    """Multiply-adds per second the instruction set allows on ``threads`` cores at the reported clock."""
    flags = all_flags()
    try:
        ghz = float(cpuinfo().get("cpu MHz", "0")) / 1e3
    except ValueError:
        ghz = 0.0
    if not ghz:
        return {}
    wide = "avx512f" in flags
    per_cycle: dict[str, tuple[int, str]] = {}
    if wide:
        per_cycle["fp32"] = (2 * 16, "AVX-512: 2 FMA x 16 lanes")
    elif "fma" in flags:
        per_cycle["fp32"] = (2 * 8, "AVX2: 2 FMA x 8 lanes")
    if "amx_bf16" in flags:
        per_cycle["bf16"] = (512, "AMX-BF16 tile multiply")
    elif "avx512_bf16" in flags:
        per_cycle["bf16"] = (2 * 16 * 2, "AVX-512 BF16: 2 units x 16 lanes x 2 (VDPBF16PS)")
    if "amx_int8" in flags:
        per_cycle["int8"] = (1024, "AMX-INT8 tile multiply")
    elif "avx512_vnni" in flags:
        per_cycle["int8"] = (2 * 16 * 4, "AVX-512 VNNI: 2 units x 16 lanes x 4 (VPDPBUSD)")
    elif "avx_vnni" in flags:
        per_cycle["int8"] = (2 * 8 * 4, "AVX-VNNI: 2 units x 8 lanes x 4")
    elif "avx2" in flags:
        per_cycle["int8"] = (32, "AVX2 without VNNI: VPMADDUBSW + VPMADDWD, ~32 per cycle")
    return {
        d: {"gmacs_per_s": n * ghz * threads, "assumes": f"{why}, {threads} cores x {ghz:.2f} GHz"}
        for d, (n, why) in per_cycle.items()
    }


# -- measured kernels ------------------------------------------------------------------------------------


def _best_seconds(fn: Callable[[], object], repeats: int, min_time: float) -> float:
    for _ in range(2):
        fn()
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def _chain(shape: tuple) -> list[tuple[int, int, tuple[int, int]]]:
    """(channels in, channels out, kernel) of each convolution in the timed chain: the shape repeated,
    or where it changes the channel count (the 1x1 projections), alternating with its way back."""
    _, cin, cout, _, k = shape
    return [(cin, cout, k) if i % 2 == 0 or cin == cout else (cout, cin, k) for i in range(CHAIN_LENGTH)]


def _chain_macs(shape: tuple) -> int:
    n, _, _, grid, _ = shape
    return sum(n * co * grid * grid * ci * kh * kw for ci, co, (kh, kw) in _chain(shape))


def _chain_name(shape: tuple) -> str:
    n, cin, cout, grid, (kh, kw) = shape
    channels = f"{cin}->{cout}" if cin == cout else f"{cin}<->{cout}"
    return f"{CHAIN_LENGTH} chained conv {kh}x{kw} {channels} @{grid}x{grid} batch {n}"


def _torch_kernels(dtype: str, threads: int, repeats: int, min_time: float) -> list[KernelRate]:
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    out = []
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(tdtype)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(tdtype)
    with torch.inference_mode():
        out.append(KernelRate(dtype, "torch", f"matmul {GEMM_SIZE}^3", GEMM_SIZE**3,
                              _best_seconds(lambda: a @ b, repeats, min_time)))
        for shape in CONV_SHAPES:
            n, cin, _, grid, _ = shape
            x = torch.randn(n, cin, grid, grid, generator=gen).to(tdtype).contiguous(memory_format=torch.channels_last)
            layers = []
            for ci, co, k in _chain(shape):
                layers += [torch.nn.Conv2d(ci, co, k, padding=(k[0] // 2, k[1] // 2), bias=False), torch.nn.ReLU()]
            chain = torch.nn.Sequential(*layers).to(tdtype).to(memory_format=torch.channels_last).eval()
            out.append(KernelRate(dtype, "torch", _chain_name(shape), _chain_macs(shape),
                                  _best_seconds(lambda: chain(x), repeats, min_time)))
    return out


def _chain_graph(shape: tuple, int8: bool) -> bytes:
    """The chain of convolutions (each followed by ReLU) as an ONNX model; ``int8``: Q/DQ on every
    activation (uint8, zero point 0) and per-channel int8 weights, the form NNCF's exports take and the
    runtimes fuse into int8 kernels that pass int8 from one convolution to the next."""
    from onnx import TensorProto, helper, numpy_helper

    n, cin, _, grid, _ = shape
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"

    def requantize(name: str) -> str:
        nodes.extend([helper.make_node("QuantizeLinear", [name, "xs", "xz"], [f"{name}_q"]),
                      helper.make_node("DequantizeLinear", [f"{name}_q", "xs", "xz"], [f"{name}_dq"])])
        return f"{name}_dq"

    if int8:
        inits += [numpy_helper.from_array(np.array(4.0 / 255, np.float32), "xs"),
                  numpy_helper.from_array(np.array(0, np.uint8), "xz")]
        x = requantize(x)
    for i, (ci, co, (kh, kw)) in enumerate(_chain(shape)):
        w = (rng.standard_normal((co, ci, kh, kw)) * np.sqrt(2.0 / (ci * kh * kw))).astype(np.float32)
        if int8:
            scale = np.abs(w).reshape(co, -1).max(1) / 127
            inits += [
                numpy_helper.from_array(np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8), f"wq{i}"),
                numpy_helper.from_array(scale.astype(np.float32), f"ws{i}"),
                numpy_helper.from_array(np.zeros(co, np.int8), f"wz{i}"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"wz{i}"], [f"w{i}"], axis=0))
        else:
            inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[kh // 2, kw // 2, kh // 2, kw // 2]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = requantize(f"r{i}") if int8 else f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    cout = _chain(shape)[-1][1]
    graph = helper.make_graph(
        nodes, "floor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, cin, grid, grid])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, cout, grid, grid])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _gemm_int8_graph(n: int) -> bytes:
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
              helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])]
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _onnxruntime_kernels(dtype: str, threads: int, repeats: int, min_time: float) -> list[KernelRate]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    rng = np.random.default_rng(0)
    out = []
    for shape in CONV_SHAPES:
        session = ort.InferenceSession(_chain_graph(shape, dtype == "int8"), opts, providers=["CPUExecutionProvider"])
        n, cin, _, grid, _ = shape
        feed = {"x": rng.random((n, cin, grid, grid), dtype=np.float32)}
        out.append(KernelRate(dtype, "onnxruntime", _chain_name(shape), _chain_macs(shape),
                              _best_seconds(lambda: session.run(None, feed), repeats, min_time)))
    if dtype == "int8":
        session = ort.InferenceSession(_gemm_int8_graph(GEMM_SIZE), opts, providers=["CPUExecutionProvider"])
        feed = {"A": rng.integers(0, 255, (GEMM_SIZE,) * 2, dtype=np.uint8),
                "B": rng.integers(-128, 127, (GEMM_SIZE,) * 2, dtype=np.int8)}
        out.append(KernelRate(dtype, "onnxruntime", f"MatMulInteger u8 x s8 {GEMM_SIZE}^3", GEMM_SIZE**3,
                              _best_seconds(lambda: session.run(None, feed), repeats, min_time)))
    return out


def _openvino_kernels(dtype: str, threads: int, repeats: int, min_time: float) -> list[KernelRate]:
    import openvino as ov

    core = ov.Core()
    hint = "bf16" if dtype == "bf16" else "f32"
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
              "CPU_DENORMALS_OPTIMIZATION": True}
    rng = np.random.default_rng(0)
    out = []
    for shape in CONV_SHAPES:
        compiled = core.compile_model(core.read_model(_chain_graph(shape, dtype == "int8"), b""), "CPU", config)
        request = compiled.create_infer_request()
        n, cin, _, grid, _ = shape
        x = rng.random((n, cin, grid, grid), dtype=np.float32)
        out.append(KernelRate(dtype, "openvino", _chain_name(shape), _chain_macs(shape),
                              _best_seconds(lambda: request.infer({0: x}), repeats, min_time)))
    return out


RUNTIMES: dict[str, tuple[tuple[str, ...], Callable[..., list[KernelRate]]]] = {
    # runtime -> (dtypes it executes here, measuring function)
    "torch": (("fp32", "bf16"), _torch_kernels),
    "onnxruntime": (("fp32", "int8"), _onnxruntime_kernels),
    "openvino": (("fp32", "bf16", "int8"), _openvino_kernels),
}


def measure_floors(threads: int, dtypes: tuple[str, ...] = DTYPES, repeats: int = 5, min_time: float = 0.3) -> Floors:
    """Measure every kernel in every installed runtime for ``dtypes`` on ``threads`` threads."""
    floors = Floors(threads=threads, isa_peak=isa_peak(threads))
    for dtype in dtypes:
        if dtype == "bf16" and not has_native_bf16():
            floors.skipped[dtype] = "this CPU has no native bfloat16"
            continue
        for runtime, (supported, fn) in RUNTIMES.items():
            if dtype not in supported:
                continue
            try:
                floors.measured += fn(dtype, threads, repeats, min_time)
            except ImportError:
                floors.skipped[f"{dtype} {runtime}"] = f"{runtime} is not installed"
    return floors


def _measure_floors_dict(threads: int) -> dict:
    return {"floors": measure_floors(threads)}


def measure_floors_in_subprocess(threads: int, timeout: float | None = None) -> Floors | None:
    """``measure_floors`` in a fresh pinned process (like every measurement); None if it failed."""
    from .measure import run_in_subprocess

    result = run_in_subprocess(_measure_floors_dict, (threads,), threads, timeout=timeout)
    return result["floors"] if result["ok"] else None


def apply_floors(rows: list, floors: Floors) -> None:
    """Fill each measured row's floor (for the precision its runtime executed), its ratio to it, and
    the flag for a row faster than its floor."""
    for row in rows:
        if row.status != "ok" or not row.macs or row.p50_ms is None or not row.batch:
            continue
        dtype = max(row.executed_ops, key=row.executed_ops.get) if row.executed_ops else row.precision
        floor = floors.floor_ms(dtype, row.macs, row.batch) if dtype in DTYPES else None
        if floor is None:
            continue
        row.floor_ms = floor
        row.below_floor = row.p50_ms < floor
        row.vs_floor = None if row.below_floor else row.p50_ms / floor
