"""Runs one onnx2tf conversion in its own process: ``python -m edgeinc.export._onnx2tf_job SPEC.json``.

A separate process because onnx2tf reads and writes its working directory (it looks for a sample
calibration file there, TOOLCHAIN trap 3), loads TensorFlow (~1 GB, released when it exits), prints a
great deal, and - for the TensorFlow-converter back end - gets three changes that apply to this
process only:

* TFLiteConverter.from_keras_model is refused, so onnx2tf takes its own fallback,
  ``from_concrete_functions``: the Keras route serialises the ~1,350-layer model to a temporary
  SavedModel for every conversion, which was ~70% of the time (measured: 125 s -> 19 s for the
  fp32+fp16 files of a small Inception-v3, from the same graph);
* the SavedModel onnx2tf writes as a by-product is skipped (nothing here reads it);
* the concrete functions are kept, so that ``full_int8`` makes the full-integer model from the same
  graph in one more converter run, with onnx2tf's settings (per-channel int8 weights, int8
  activations, int8/uint8 IO, built-in ops only), calibrated on the export's images. onnx2tf's own
  ``output_integer_quantized_tflite`` makes four more quantized variants, each calibrated again.

Every file made here is checked by the exporter in LiteRT against ONNX Runtime before it is kept.
The spec holds onnx2tf.convert's keyword arguments, ``sample_npy`` (what onnx2tf would otherwise
download) and optionally ``full_int8``.
"""

from __future__ import annotations

import json
import os
import sys

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _patch_tensorflow() -> dict:
    import tensorflow as tf

    captured: dict = {}
    from_concrete = tf.lite.TFLiteConverter.from_concrete_functions

    def capture(cls, funcs, trackable_obj=None):
        captured["funcs"], captured["trackable_obj"] = funcs, trackable_obj
        return from_concrete(funcs, trackable_obj)

    def refuse_keras(cls, *args, **kwargs):
        raise RuntimeError("edgeinc: convert from the concrete functions instead of re-serialising the Keras model")

    tf.lite.TFLiteConverter.from_concrete_functions = classmethod(capture)
    tf.lite.TFLiteConverter.from_keras_model = classmethod(refuse_keras)
    tf.saved_model.save = lambda *args, **kwargs: None
    captured["from_concrete"] = from_concrete
    return captured


def full_int8(captured: dict, calib_npy: str, mean: list[float], std: list[float], io: str, out: str) -> None:
    import numpy as np
    import tensorflow as tf

    if "funcs" not in captured:
        raise RuntimeError("onnx2tf did not convert through TFLiteConverter.from_concrete_functions")
    pixels = np.load(calib_npy)  # N x H x W x 3 in [0, 1]
    normalised = ((pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)

    def representative():
        for image in normalised:
            yield [image[None]]

    converter = captured["from_concrete"](captured["funcs"], captured["trackable_obj"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = representative
    converter.inference_input_type = converter.inference_output_type = {"int8": tf.int8, "uint8": tf.uint8}[io]
    with open(out, "wb") as f:
        f.write(converter.convert())


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    import numpy as np

    np.save(os.path.join(os.getcwd(), SAMPLE_FILE), np.load(spec.pop("sample_npy")))
    captured = _patch_tensorflow() if spec["convert"].get("tflite_backend", "tf_converter") == "tf_converter" else {}
    import onnx2tf

    onnx2tf.convert(**spec["convert"])
    if "full_int8" in spec:
        full_int8(captured, **spec["full_int8"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
