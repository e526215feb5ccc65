"""Fault injection for the harness tests: a board whose runtime misbehaves, selected by $XQHIL_FAULT.

Put this folder on the board Python's PYTHONPATH (``--python "env PYTHONPATH=DIR XQHIL_FAULT=... python3"``):
    perturb-int8:SCALE       INT8 models (file name int8.onnx) return outputs + SCALE * std(output) noise
    nonfinite-int8:nan|inf   INT8 models return NaN (or +Inf) for the first sample of every batch
    node:KIND:ARG:NODE       INT8 models run with NODE's first output miscomputed: KIND scale (ARG: factor),
                             zero, zp (one INT8 step added: a zero point off by one), signflip (negatives made
                             positive), swap (channels 0 and 1 exchanged), clamp (ARG: saturate at that
                             fraction of the tensor's max |x|), stale (the value of the previous run: needs
                             onnx on the board, so not under qemu-board.sh); models without NODE run unchanged
    none                     no fault (with XQHIL_FAULT_REFUSE_QOUT=1: only the refusal below)
    XQHIL_FAULT_REFUSE_QOUT=1  (any fault) INT8 models with a QuantizeLinear output as a graph output fail to
                             load, like a runtime that cannot expose quantized tensors
    INT8 models are those whose file name starts with "int8" (the harness's localisation models do too).
    On a board Python without onnx (the riscv64 rootfs) wrap the interpreter in qemu-board.sh, which has the
    host Python prepare the faulty models first.
    scale-node:NODE:FACTOR   INT8 models run with NODE's output multiplied by FACTOR (a Mul is inserted after
                             it in the model bytes before the session is made; needs the onnx package)
    kill-after:N             the process SIGKILLs itself on its N-th inference (like the OOM killer, mid-run)
    sleep:SECONDS            sleep before anything runs (a board that hangs)
    slow-int8:PERCENT        every run of an INT8 model takes PERCENT % longer (it busy-waits that fraction of
                             its own measured run time after the real run: a slower INT8 kernel, CPU-bound
                             like one, so it meets the board's load as the real work does); FP32 unchanged
    slow-all:PERCENT         the same for every model, FP32 too (a board-wide slowdown: clock, thermal, load)
    XQHIL_FAULT_ORT_VERSION=V  (any fault) onnxruntime reports version V: a runtime release, as the history
                             records it (a latency regression needs a recorded change, docs/history.md)
The agent itself is not modified: only the runtime underneath it is.
"""
import os
import signal
import time

FAULT = os.environ.get("XQHIL_FAULT", "")
REFUSE = os.environ.get("XQHIL_FAULT_REFUSE_QOUT") == "1"
STALE_INPUT = "fault_stale"
KIND, _, ARG = FAULT.partition(":")


def _channels(model, tensor):
    import onnx

    for value in onnx.shape_inference.infer_shapes(model).graph.value_info:
        if value.name == tensor:
            dims = value.type.tensor_type.shape.dim
            if len(dims) > 1 and dims[1].dim_value > 1:
                return dims[1].dim_value
    raise RuntimeError("fault swap: the channel count of %r is unknown" % tensor)


def _lsb(model, tensor):
    """The scale of the first QuantizeLinear downstream of ``tensor`` (one step of the INT8 grid)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    frontier = [tensor]
    while frontier:
        current = frontier.pop(0)
        for node in model.graph.node:
            if current in node.input:
                if node.op_type == "QuantizeLinear":
                    return float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
                frontier.extend(node.output)
    raise RuntimeError("fault zp: no QuantizeLinear downstream of %r" % tensor)


def _fault_nodes(model, src, dst, kind, arg):
    ref = dst  # the tensor as the unmodified model names it (for its shape and downstream scale)
    """Nodes (and initializers) that compute ``dst`` from ``src`` with fault ``kind`` applied."""
    from onnx import helper, numpy_helper
    import numpy as np

    def const(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype), "fault_" + name)

    if kind == "scale":
        return [helper.make_node("Mul", [src, "fault_k"], [dst], name="fault")], [const("k", float(arg))]
    if kind == "zero":
        return [helper.make_node("Mul", [src, "fault_k"], [dst], name="fault")], [const("k", 0.0)]
    if kind == "zp":
        return [helper.make_node("Add", [src, "fault_k"], [dst], name="fault")], [const("k", _lsb(model, ref))]
    if kind == "signflip":
        return [helper.make_node("Abs", [src], [dst], name="fault")], []
    if kind == "swap":
        order = list(range(_channels(model, ref)))
        order[0], order[1] = 1, 0
        return [helper.make_node("Gather", [src, "fault_k"], [dst], axis=1, name="fault")], \
            [const("k", order, np.int64)]
    if kind == "clamp":
        nodes = [helper.make_node("Abs", [src], ["fault_abs"], name="fault_abs"),
                 helper.make_node("ReduceMax", ["fault_abs"], ["fault_max"], name="fault_max"),
                 helper.make_node("Mul", ["fault_max", "fault_k"], ["fault_hi"], name="fault_hi"),
                 helper.make_node("Neg", ["fault_hi"], ["fault_lo"], name="fault_lo"),
                 helper.make_node("Max", [src, "fault_lo"], ["fault_low"], name="fault_low"),
                 helper.make_node("Min", ["fault_low", "fault_hi"], [dst], name="fault")]
        return nodes, [const("k", float(arg or 0.5))]
    if kind == "stale":  # the session feeds the node's value from the previous run into STALE_INPUT
        return [helper.make_node("Identity", [STALE_INPUT], [dst], name="fault")], []
    raise RuntimeError("unknown node fault %r (scale, zero, zp, signflip, swap, clamp, stale)" % kind)


def faulty_model(path, node_name, kind, arg=""):
    """The bytes of the model at ``path`` with ``node_name``'s first output miscomputed as ``kind`` says;
    the model unchanged when it has no such node (a runtime bug in one node spares models without it)."""
    import onnx

    model = onnx.load(path)
    nodes = list(model.graph.node)
    index = next((i for i, n in enumerate(nodes) if n.name == node_name), None)
    if index is None:
        return model.SerializeToString()
    target = nodes[index]
    original = target.output[0]
    extra, inits = _fault_nodes(model, original + "_fault_in", original, kind, arg)
    target.output[0] = original + "_fault_in"
    if kind == "stale":
        from onnx import TensorProto, helper

        model.graph.input.append(helper.make_tensor_value_info(STALE_INPUT, TensorProto.FLOAT, None))
    model.graph.initializer.extend(inits)
    for offset, node in enumerate(extra):
        model.graph.node.insert(index + 1 + offset, node)
    return model.SerializeToString()


def scaled_model(path, node_name, factor):
    """The bytes of the model at ``path`` with ``node_name``'s first output multiplied by ``factor``."""
    return faulty_model(path, node_name, "scale", factor)


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def rewritten(path):
    """The bytes of the INT8 model at ``path`` with this process's node fault applied."""
    if KIND == "scale-node":
        node, _, factor = ARG.rpartition(":")
        return scaled_model(path, node, float(factor))
    kind, arg, node = ARG.split(":", 2)
    return faulty_model(path, node, kind, arg)


def stale_probe(path):
    """(bytes of the unmodified model that also outputs the node's tensor, its name) for a ``stale`` fault
    on a node the model has; None otherwise."""
    import onnx
    from onnx import TensorProto, helper

    kind, _, node = ARG.split(":", 2)
    model = onnx.load(path)
    target = next((n for n in model.graph.node if n.name == node), None)
    if kind != "stale" or target is None:
        return None
    if target.output[0] not in {o.name for o in model.graph.output}:
        model.graph.output.append(helper.make_tensor_value_info(target.output[0], TensorProto.FLOAT, None))
    return model.SerializeToString(), target.output[0]


def refused(path):
    if os.path.exists(path + ".refused"):
        return True
    if os.path.exists(path + ".fault"):  # prepared by prefault(): this Python may lack onnx, the host judged
        return False
    return refuses(path)


def prefault(folder):
    """For a board Python without the onnx package (the riscv64 rootfs): the host Python writes each
    int8*.onnx's faulty bytes to <model>.fault and a <model>.refused marker beside it (faults/qemu-board.sh)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not (name.startswith("int8") and name.endswith(".onnx")):
            continue
        if KIND in ("scale-node", "node"):
            with open(path + ".fault", "wb") as handle:
                handle.write(rewritten(path))
        if REFUSE and refuses(path):
            open(path + ".refused", "w").close()


def refuses(path):
    """$XQHIL_FAULT_REFUSE_QOUT: a runtime that cannot return a QuantizeLinear output as a graph output."""
    import onnx

    model = onnx.load(path)
    quant = {o for n in model.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    return any(o.name in quant for o in model.graph.output)


SLOW = {"slow-int8": "int8", "slow-all": "all"}.get(KIND)


def _extend(started, percent):
    """Busy-wait until the call that started at ``started`` has taken ``percent`` % longer than it did."""
    now = time.perf_counter()
    until = now + (now - started) * percent / 100.0
    while time.perf_counter() < until:
        pass


if os.environ.get("XQHIL_FAULT_ORT_VERSION"):
    import onnxruntime as _ort

    _ort.__version__ = os.environ["XQHIL_FAULT_ORT_VERSION"]
if KIND == "sleep":
    time.sleep(float(ARG))
elif KIND in ("perturb-int8", "kill-after", "nonfinite-int8", "scale-node", "node", "none") or SLOW:
    import numpy as np
    import onnxruntime

    _Real = onnxruntime.InferenceSession
    _calls = [0]

    class FaultySession(_Real):
        def __init__(self, path, *args, **kwargs):
            source = str(path)
            self._fault_int8 = os.path.basename(source).startswith("int8")
            if self._fault_int8 and KIND in ("scale-node", "node"):
                path = _read(source + ".fault") if os.path.exists(source + ".fault") else rewritten(source)
            if REFUSE and self._fault_int8 and refused(source):
                raise RuntimeError("fault refuse-qout: this runtime cannot return a quantized tensor as an output")
            self._stale = None
            if self._fault_int8 and KIND == "node" and ARG.startswith("stale:"):
                probe = stale_probe(source)
                if probe is not None:
                    self._stale = [_Real(probe[0], *args, **kwargs), probe[1], None]
            super().__init__(path, *args, **kwargs)
            self._fault_rng = np.random.default_rng(0)

        def get_inputs(self):
            return [i for i in super().get_inputs() if i.name != STALE_INPUT]

        def _stale_feed(self, args, kwargs):
            """The feed with the node's value from the previous run (this run's when the shape changed)."""
            probe, name, previous = self._stale
            feed = dict(args[1] if len(args) > 1 else kwargs.pop("input_feed"))
            current = probe.run([name], feed)[0]
            feed[STALE_INPUT] = previous if previous is not None and previous.shape == current.shape else current
            self._stale[2] = current
            return (args[0], feed) + tuple(args[2:])

        def run(self, *args, **kwargs):
            _calls[0] += 1
            if KIND == "kill-after" and _calls[0] >= int(ARG):
                os.kill(os.getpid(), signal.SIGKILL)
            if self._stale is not None:
                args = self._stale_feed(args, kwargs)
            started = time.perf_counter()
            outputs = super().run(*args, **kwargs)
            if SLOW == "all" or (SLOW == "int8" and self._fault_int8):
                _extend(started, float(ARG))
            if KIND == "perturb-int8" and self._fault_int8:
                scale = float(ARG)
                outputs = [o + scale * float(np.std(o) or 1.0) * self._fault_rng.standard_normal(o.shape)
                           .astype(o.dtype) for o in outputs]
            if KIND == "nonfinite-int8" and self._fault_int8:
                value = np.inf if ARG == "inf" else np.nan
                outputs = [np.array(o, copy=True) for o in outputs]
                for out in outputs:
                    out[0] = value
            return outputs

    onnxruntime.InferenceSession = FaultySession
