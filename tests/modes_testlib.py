"""Tiny models for the modes beside INT8 (FP16, dynamic quantization): a sequence model with the ops those
modes care about (weight MatMuls, LayerNormalization, self-attention, LSTM), and projects around it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEQ, DIM, HIDDEN, CLASSES = 6, 8, 8, 4


def build_seq_model(seed: int = 0, overflow: bool = False, opset: int = 17, tiny: bool = False,
                    lstm_gain: float = 0.0) -> onnx.ModelProto:
    """x [N, 6, 8] -> MatMul+Add -> LayerNorm -> self-attention (Q K^T, Softmax, x V) -> LSTM (time major,
    between Transposes) -> MatMul -> ReduceMean over time -> logits [N, 4]. ``overflow``: the hidden state is
    scaled by 3e4 and back (Mul 'amplify', Transpose 'swap', Div 'attenuate', Transpose 'swap_back'), so
    float16 overflows in 'amplify', 'swap' and 'attenuate' and nowhere else. ``tiny``: the output is
    scaled by 1e-6 (Mul 'shrink', then Identity 'tail'), values float16 holds only as subnormals, like a
    wake-word model's probabilities near 1e-6. ``lstm_gain``: the LSTM reads its input times this (Mul 'loud'),
    so its gates' pre-activations are hundreds, like silero VAD's: INT8 weights flip the gates near zero."""
    rng = np.random.default_rng(seed)

    def w(name, *shape, scale=0.5):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("w_in", DIM, 16), w("b_in", 16, scale=0.1), numpy_helper.from_array(np.ones(16, np.float32), "ln_s"),
             numpy_helper.from_array(np.zeros(16, np.float32), "ln_b"), w("w_q", 16, 16), w("w_k", 16, 16),
             w("w_v", 16, 16), numpy_helper.from_array(np.array(0.25, np.float32), "inv_sqrt_d"),
             w("lstm_w", 1, 4 * HIDDEN, 16, scale=0.3), w("lstm_r", 1, 4 * HIDDEN, HIDDEN, scale=0.3),
             w("lstm_b", 1, 8 * HIDDEN, scale=0.1), numpy_helper.from_array(np.array([0, -1, HIDDEN], np.int64), "shp"),
             w("w_out", HIDDEN, CLASSES), numpy_helper.from_array(np.array([1], np.int64), "time_axis"),
             numpy_helper.from_array(np.array(3e4, np.float32), "big"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "tiny_scale")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_in"], ["h0"], name="proj_in"),
        helper.make_node("Add", ["h0", "b_in"], ["h1"], name="proj_bias"),
        helper.make_node("LayerNormalization", ["h1", "ln_s", "ln_b"], ["h2"], name="norm", axis=-1),
    ]
    src = "h2"
    if overflow:
        nodes += [helper.make_node("Mul", ["h2", "big"], ["h2_big"], name="amplify"),
                  helper.make_node("Transpose", ["h2_big"], ["h2_t"], name="swap", perm=[0, 2, 1]),
                  helper.make_node("Div", ["h2_t", "big"], ["h2_small"], name="attenuate"),
                  helper.make_node("Transpose", ["h2_small"], ["h2_back"], name="swap_back", perm=[0, 2, 1])]
        src = "h2_back"
    nodes += [
        helper.make_node("MatMul", [src, "w_q"], ["q"], name="query"),
        helper.make_node("MatMul", [src, "w_k"], ["k"], name="key"),
        helper.make_node("MatMul", [src, "w_v"], ["v"], name="value"),
        helper.make_node("Transpose", ["k"], ["kt"], name="key_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Mul", ["scores", "inv_sqrt_d"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"], name="context"),
        helper.make_node("Add", ["ctx", src], ["res"], name="residual"),
        helper.make_node("Transpose", ["res"], ["res_t"], name="time_major", perm=[1, 0, 2]),
        helper.make_node("LSTM", ["res_loud" if lstm_gain else "res_t", "lstm_w", "lstm_r", "lstm_b"], ["y"],
                         name="lstm", hidden_size=HIDDEN),
        helper.make_node("Transpose", ["y"], ["y_b"], name="batch_major", perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["y_b", "shp"], ["y2"], name="flat"),
        helper.make_node("MatMul", ["y2", "w_out"], ["per_step"], name="classifier"),
        helper.make_node("ReduceMean", ["per_step", "time_axis"], ["pooled" if tiny else "logits"], name="pool",
                         keepdims=0),
    ]
    if lstm_gain:
        inits.append(numpy_helper.from_array(np.array(lstm_gain, np.float32), "gain"))
        nodes.insert(next(i for i, n in enumerate(nodes) if n.name == "lstm"),
                     helper.make_node("Mul", ["res_t", "gain"], ["res_loud"], name="loud"))
    if tiny:
        nodes += [helper.make_node("Mul", ["pooled", "tiny_scale"], ["small"], name="shrink"),
                  helper.make_node("Identity", ["small"], ["logits"], name="tail")]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SEQ, DIM])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 18))])
    model.ir_version = 8
    if opset < 18:  # ReduceMean takes axes as an input from 18: rebuild with the attribute for older opsets
        node = next(n for n in model.graph.node if n.name == "pool")
        node.input.pop()
        node.attribute.append(helper.make_attribute("axes", [1]))
        model.opset_import[0].version = opset
    onnx.checker.check_model(model, full_check=True)
    return model


def make_seq_project(folder: Path, precision_level: int, n_calib: int = 16, n_eval: int = 16,
                     overflow: bool = False, tiny: bool = False, spelling: str = "input_parametres",
                     lstm_gain: float = 0.0, **quant) -> Path:
    """The sequence model, .npy samples, list files and a config with verify_parameters; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_seq_model(overflow=overflow, tiny=tiny, lstm_gain=lstm_gain), folder / "seq.onnx")
    rng = np.random.default_rng(7)
    (folder / "data").mkdir(exist_ok=True)
    names = []
    for i in range(n_calib + n_eval):
        names.append(f"data/s{i:04d}.npy")
        np.save(folder / names[-1], rng.standard_normal((SEQ, DIM)).astype(np.float32))
    (folder / "calib.txt").write_text("\n".join(names[:n_calib]) + "\n")
    (folder / "eval.txt").write_text("\n".join(names[n_calib:]) + "\n")
    config = {
        "model_parameters": {"onnx_model": "seq.onnx", "output_prefix": "seq", "working_dir": "work"},
        "calibration_parameters": {"calibration_step": n_calib, spelling: [
            {"input_name": "x", "input_shape": [1, SEQ, DIM], "file_type": "npy", "data_list_path": "calib.txt"}]},
        "quantization_parameters": {"precision_level": precision_level, **quant},
        "verify_parameters": {"data_list_path": ["eval.txt"], "max_samples": n_eval, "warmup": 1, "repeat": 3},
    }
    path = folder / "cfg.json"
    path.write_text(json.dumps(config, indent=1))
    return path
