"""Tiny models that reproduce CLASSES of real-world export quirks (issue 13), and their calibration data.

Each builder stands for what public exporters produce: Paddle2ONNX batch dims stored as ``-1`` or ``0``,
fixed-batch exports, audio models with an LSTM, integer side inputs (sample rate, byte ids, masks),
recurrent state tensors whose batch is on axis 1, old opsets, If subgraphs and external data."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = Union[int, str, None]


def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def finish_model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 11 else 4
    return model


def set_batch_dim(model: onnx.ModelProto, batch: Dim) -> onnx.ModelProto:
    """``model`` with dim 0 of every input and output stored as ``batch``: a name (symbolic), an int
    (``-1`` and ``0`` as Paddle2ONNX writes them, or a fixed size) or None (no dim info)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        if isinstance(batch, str):
            dim.dim_param = batch
        elif batch is not None:
            dim.dim_value = batch
    return model


def build_conv_net(batch: Dim = "N", seed: int = 0) -> onnx.ModelProto:
    """Conv(bias)-Relu -> Conv(bias)-Relu -> GlobalAveragePool -> Flatten -> Gemm on [batch, 1, 28, 28]:
    biases to correct, every stage exercised. ``batch`` as in ``set_batch_dim``."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (8, 1, 3, 3)).astype(np.float32)),
             _init("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
             _init("w2", rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32)),
             _init("b2", rng.normal(0, 0.1, 8).astype(np.float32)),
             _init("wf", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
             _init("bf", rng.normal(0, 0.1, 10).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "conv_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return set_batch_dim(finish_model(graph), batch)


def build_hard_coded_batch_net(seed: int = 0) -> onnx.ModelProto:
    """``build_conv_net`` with a free batch whose head reshapes to a constant [1, 8] (as exports that traced
    with one sample do): it declares any batch but runs only one sample at a time."""
    model = build_conv_net(seed=seed)
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    flatten.op_type, flatten.input[:] = "Reshape", ["gap", "head_shape"]
    del flatten.attribute[:]
    model.graph.initializer.append(_init("head_shape", np.array([1, 8], np.int64)))
    return model


def build_free_width_net(seed: int = 0) -> onnx.ModelProto:
    """``build_conv_net`` exported with a fixed batch of 1 and a free image width [1, 1, 28, 'image_width'],
    as OCR recognisers are: the free dim is not the batch."""
    model = build_conv_net(batch=1, seed=seed)
    dim = model.graph.input[0].type.tensor_type.shape.dim[3]
    dim.Clear()
    dim.dim_param = "image_width"
    return model


def build_shape_anchor_net(seed: int = 0) -> onnx.ModelProto:
    """A YOLO-style export whose decode reads a grid size computed from a Shape in the main part:
    x -> conv1 -> c1 -> conv2 -> c2 (the cut); grid = Cast(Gather(Shape(c1), 3)) + 0.5;
    tail: Sigmoid(c2) * grid -> GlobalAveragePool -> Flatten -> ``boxes`` [N, 4]."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)),
             _init("w2", rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)),
             _init("three", np.array(3, np.int64)), _init("half", np.array(0.5, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             helper.make_node("Shape", ["c1"], ["c1_shape"], name="shape"),
             helper.make_node("Gather", ["c1_shape", "three"], ["width"], axis=0, name="width"),
             helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT, name="width_f"),
             helper.make_node("Add", ["width_f", "half"], ["grid"], name="grid"),
             helper.make_node("Sigmoid", ["c2"], ["sig"], name="sigmoid"),
             helper.make_node("Mul", ["sig", "grid"], ["scaled"], name="decode"),
             helper.make_node("GlobalAveragePool", ["scaled"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["boxes"], name="flatten")]
    graph = helper.make_graph(nodes, "shape_anchor_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4])], inits)
    model = finish_model(graph, 17)
    onnx.checker.check_model(model)
    return model


def build_time_major_head(seed: int = 0, channels: int = 6) -> onnx.ModelProto:
    """A CRNN-style recogniser head as PyTorch 1.x traced it (ddddocr): [1, 1, 4, 'width'] -> Conv (height
    4 -> 1) -> Transpose [width, 1, C, 1] -> Reshape to [T, 1, C] with a shape computed from Shape/Gather/
    Concat -> the time-major output. The export declares that output as [1, 'seqlen'] (a stale
    trace-time declaration; onnxruntime only warns), which a simplifier must not turn into a constant."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (channels, 1, 4, 3)).astype(np.float32)),
             _init("b1", rng.normal(0, 0.1, channels).astype(np.float32)),
             _init("i0", np.array(0, np.int64)), _init("i1", np.array(1, np.int64)),
             _init("axes0", np.array([0], np.int64)), _init("classes", np.array([channels], np.int64))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[0, 1, 0, 1], name="conv"),
             helper.make_node("Transpose", ["c1"], ["t"], perm=[3, 0, 1, 2], name="to_time_major"),
             helper.make_node("Shape", ["t"], ["t_shape"], name="shape"),
             helper.make_node("Gather", ["t_shape", "i0"], ["steps"], axis=0, name="steps"),
             helper.make_node("Gather", ["t_shape", "i1"], ["batch"], axis=0, name="batch"),
             helper.make_node("Unsqueeze", ["steps", "axes0"], ["steps_1"], name="steps_1"),
             helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch_1"], name="batch_1"),
             helper.make_node("Concat", ["steps_1", "batch_1", "classes"], ["new_shape"], axis=0, name="cat"),
             helper.make_node("Reshape", ["t", "new_shape"], ["logits"], name="reshape")]
    graph = helper.make_graph(nodes, "time_major_head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, "width"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seqlen"])], inits)
    model = finish_model(graph, 13)
    onnx.checker.check_model(model)
    return model


MELS, FRAMES, HIDDEN, LAYERS, CLASSES = 16, 12, 8, 1, 4


def build_audio_lstm(seed: int = 0, batch: Dim = "batch", side_inputs: bool = True) -> onnx.ModelProto:
    """An audio tagger as exporters write it, with every input kind that used to be refused:

    * ``mel`` [batch, MELS, FRAMES] float: reaches the LSTM only through data movement (Transpose);
    * ``h0`` [LAYERS, batch, HIDDEN] float: the recurrent state, batch on axis 1;
    * ``sample_rate`` int64 scalar: scales the output (Cast, Div);
    * ``mask`` [batch, FRAMES] bool: which frames count (Cast, Mul).

    mel -> Transpose [FRAMES, batch, MELS] -> LSTM(h0) -> Y [FRAMES, 1, batch, HIDDEN] -> Squeeze ->
    Transpose [batch, FRAMES, HIDDEN] -> MatMul(w_out) -> Mul(mask) -> ReduceMean over frames -> Mul(rate).
    Without ``side_inputs`` only ``mel`` is an input (zero state, no mask, no rate)."""
    rng = np.random.default_rng(seed)
    g = 4 * HIDDEN
    inits = [_init("lstm_w", rng.normal(0, 0.3, (1, g, MELS)).astype(np.float32)),
             _init("lstm_r", rng.normal(0, 0.3, (1, g, HIDDEN)).astype(np.float32)),
             _init("lstm_b", rng.normal(0, 0.1, (1, 2 * g)).astype(np.float32)),
             _init("w_out", rng.normal(0, 0.5, (HIDDEN, CLASSES)).astype(np.float32)),
             _init("squeeze_axes", np.array([1], np.int64)), _init("mean_axes", np.array([1], np.int64)),
             _init("mean_axes_2", np.array([2], np.int64)), _init("rate_ref", np.array(16000.0, np.float32))]
    nodes = [helper.make_node("Transpose", ["mel"], ["mel_t"], perm=[2, 0, 1], name="to_time_major"),
             helper.make_node("LSTM", ["mel_t", "lstm_w", "lstm_r", "lstm_b"] + (["", "h0"] if side_inputs else []),
                              ["y"], hidden_size=HIDDEN, name="lstm"),
             helper.make_node("Squeeze", ["y", "squeeze_axes"], ["y_sq"], name="squeeze_dirs"),
             helper.make_node("Transpose", ["y_sq"], ["y_bt"], perm=[1, 0, 2], name="to_batch_major"),
             helper.make_node("MatMul", ["y_bt", "w_out"], ["frame_logits"], name="classifier")]
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [batch, MELS, FRAMES])]
    if side_inputs:
        nodes += [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT, name="mask_cast"),
                  helper.make_node("Unsqueeze", ["mask_f", "mean_axes_2"], ["mask_u"], name="mask_unsqueeze"),
                  helper.make_node("Mul", ["frame_logits", "mask_u"], ["masked"], name="apply_mask"),
                  helper.make_node("ReduceMean", ["masked", "mean_axes"], ["clip_logits"], keepdims=0, name="pool"),
                  helper.make_node("Cast", ["sample_rate"], ["rate_f"], to=TensorProto.FLOAT, name="rate_cast"),
                  helper.make_node("Div", ["rate_f", "rate_ref"], ["rate_gain"], name="rate_gain"),
                  helper.make_node("Mul", ["clip_logits", "rate_gain"], ["scores"], name="apply_rate")]
        inputs += [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [LAYERS, batch, HIDDEN]),
                   helper.make_tensor_value_info("sample_rate", TensorProto.INT64, []),
                   helper.make_tensor_value_info("mask", TensorProto.BOOL, [batch, FRAMES])]
    else:
        nodes.append(helper.make_node("ReduceMean", ["frame_logits", "mean_axes"], ["scores"], keepdims=0,
                                      name="pool"))
    graph = helper.make_graph(nodes, "audio_lstm" if side_inputs else "mel_lstm", inputs,
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, CLASSES])], inits)
    model = finish_model(graph, 18)
    onnx.checker.check_model(model)
    return model


def build_byte_classifier(seed: int = 0, length: int = 24) -> onnx.ModelProto:
    """int32 byte ids [batch, length] -> Gather(embedding) -> MatMul -> Relu -> ReduceMean -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [_init("embed", rng.normal(0, 1.0, (256, 8)).astype(np.float32)),
             _init("w1", rng.normal(0, 0.4, (8, 8)).astype(np.float32)),
             _init("axes", np.array([1], np.int64)),
             _init("wf", rng.normal(0, 0.4, (3, 8)).astype(np.float32)),
             _init("bf", np.zeros(3, np.float32))]
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["emb"], axis=0, name="embed"),
             helper.make_node("MatMul", ["emb", "w1"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("ReduceMean", ["hr", "axes"], ["pooled"], keepdims=0, name="pool"),
             helper.make_node("Gemm", ["pooled", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "byte_classifier",
                              [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", length])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = finish_model(graph, 18)
    onnx.checker.check_model(model)
    return model


def build_old_opset_net(opset: int = 9, seed: int = 0, upsample: str = "nearest",
                        bn_spatial: Optional[int] = None) -> onnx.ModelProto:
    """A CNN exported with an old opset: Conv-BatchNormalization-Relu -> MaxPool -> Upsample (Resize from
    opset 10) -> Conv -> GlobalAveragePool -> Flatten -> Gemm. ``upsample="linear"`` before opset 10 is an
    op whose conversion changes results (Upsample's linear mode has no exact Resize equivalent);
    ``bn_spatial=0`` (opset 7/8) one the converter cannot convert."""
    rng = np.random.default_rng(seed)
    bn = (4, 28, 28) if bn_spatial == 0 else (4,)
    inits = [_init("w1", rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)),
             _init("bn_s", rng.uniform(0.5, 1.5, bn).astype(np.float32)),
             _init("bn_b", rng.normal(0, 0.1, bn).astype(np.float32)),
             _init("bn_m", rng.normal(0, 0.1, bn).astype(np.float32)),
             _init("bn_v", rng.uniform(0.5, 1.5, bn).astype(np.float32)),
             _init("w2", rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)),
             _init("wf", rng.normal(0, 0.3, (10, 4)).astype(np.float32)),
             _init("bf", np.zeros(10, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn",
                              **({} if bn_spatial is None else {"spatial": bn_spatial})),
             helper.make_node("Relu", ["bn"], ["r1"], name="relu"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    if opset >= 9:
        inits.append(_init("up_scales", np.array([1, 1, 2, 2], np.float32)))
        op = "Resize" if opset >= 10 else "Upsample"
        nodes.append(helper.make_node(op, ["p1", "up_scales"], ["up"], mode=upsample, name="upsample"))
    else:
        nodes.append(helper.make_node("Upsample", ["p1"], ["up"], mode=upsample, scales=[1.0, 1.0, 2.0, 2.0],
                                      name="upsample"))
    nodes += [helper.make_node("Conv", ["up", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "old_opset_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = finish_model(graph, opset)
    if opset < 9:  # IR 3, as exporters of that era wrote: every initializer also a graph input
        model.ir_version = 3
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)
    return model


def build_if_model(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu, then an If on a model-computed condition whose branches read the Conv output from the
    outer scope (one scales it, one negates it), then Gemm: subgraph bodies reading outer tensors."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)),
             _init("b1", rng.normal(0, 0.1, 4).astype(np.float32)),
             _init("two", np.array(2.0, np.float32)), _init("zero", np.array(0.0, np.float32)),
             _init("wf", rng.normal(0, 0.3, (10, 4)).astype(np.float32)),
             _init("bf", np.zeros(10, np.float32))]
    then_g = helper.make_graph([helper.make_node("Mul", ["r1", "two"], ["then_out"], name="then_mul")], "then",
                               [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["r1"], ["else_out"], name="else_neg")], "else",
                               [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("ReduceMean", ["x"], ["mean_x"], keepdims=0, name="mean_x"),
             helper.make_node("Greater", ["mean_x", "zero"], ["cond"], name="cond"),
             helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g, name="if"),
             helper.make_node("GlobalAveragePool", ["branch"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "if_model",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = finish_model(graph, 17)
    onnx.checker.check_model(model)
    return model


def build_loop_model(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu, then a Loop (3 trips) whose body adds the outer Conv output to a carried tensor and
    runs a Conv of its own (a weighted op inside a body stays float), then GlobalAveragePool -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [_init("w1", rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)),
             _init("b1", rng.normal(0, 0.1, 4).astype(np.float32)),
             _init("w_body", rng.normal(0, 0.2, (4, 4, 1, 1)).astype(np.float32)),
             _init("trips", np.array(3, np.int64)), _init("keep_going", np.array(True)),
             _init("wf", rng.normal(0, 0.3, (10, 4)).astype(np.float32)),
             _init("bf", np.zeros(10, np.float32))]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Add", ["acc_in", "r1"], ["acc_sum"], name="body_add"),
         helper.make_node("Conv", ["acc_sum", "w_body"], ["acc_out"], name="body_conv")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Loop", ["trips", "keep_going", "r1"], ["looped"], body=body, name="loop"),
             helper.make_node("GlobalAveragePool", ["looped"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "loop_model",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = finish_model(graph, 17)
    onnx.checker.check_model(model)
    return model


def save_external(model: onnx.ModelProto, path: Path) -> Path:
    """Save ``model`` as ``path`` plus ``<name>.data`` holding every initializer (as large exports are)."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
    return path


def mel_like(count: int, seed: int = 0) -> np.ndarray:
    """Mel power spectrogram frames [count, MELS, FRAMES] of harmonic tones: a few loud bins, most near 0
    (a heavy-tailed range that one INT8 step of the loudest bin wipes out)."""
    rng = np.random.default_rng(seed)
    bins = np.arange(MELS)[:, None]
    out = []
    for _ in range(count):
        f0 = rng.uniform(1, MELS / 3)
        energy = sum(np.exp(-0.5 * ((bins - k * f0) / 0.8) ** 2) / k ** 2 for k in range(1, 4))
        env = np.abs(np.sin(np.linspace(0, rng.uniform(1, 4), FRAMES)))[None]
        out.append((energy * env) ** 2 * rng.uniform(1, 30) + rng.exponential(0.02, (MELS, FRAMES)))
    return np.stack(out).astype(np.float32)


def write_npy_files(folder: Path, stem: str, arrays: Sequence[np.ndarray]) -> Path:
    """One .npy per array and a list file naming them; returns the list file."""
    folder.mkdir(parents=True, exist_ok=True)
    names: List[str] = []
    for i, array in enumerate(arrays):
        name = f"{stem}_{i:03d}.npy"
        np.save(folder / name, array)
        names.append(name)
    lst = folder / f"{stem}.txt"
    lst.write_text("\n".join(names) + "\n")
    return lst


def npy_config(model: onnx.ModelProto, folder: Path, inputs: Dict[str, Sequence[np.ndarray]],
               shapes: Optional[Dict[str, list]] = None, **quant) -> dict:
    """A config dict for ``model`` saved under ``folder`` with one npy list per input."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    params = []
    for name, arrays in inputs.items():
        item = {"input_name": name, "file_type": "npy",
                "data_list_path": str(write_npy_files(folder / "data", name, arrays))}
        if shapes and name in shapes:
            item["input_shape"] = shapes[name]
        params.append(item)
    return {"model_parameters": {"onnx_model": str(path), "working_dir": str(folder)},
            "calibration_parameters": {"calibration_step": 64, "input_parametres": params},
            "quantization_parameters": {"finetune_level": 0, **quant}}
