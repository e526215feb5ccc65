"""Fault injection for the harness tests: a board whose runtime misbehaves, selected by $XQHIL_FAULT.

Put this folder on the board Python's PYTHONPATH (``--python "env PYTHONPATH=DIR XQHIL_FAULT=... python3"``):
    perturb-int8:SCALE       INT8 models (file name int8.onnx) return outputs + SCALE * std(output) noise
    nonfinite-int8:nan|inf   INT8 models return NaN (or +Inf) for the first sample of every batch
    scale-node:NODE:FACTOR   INT8 models run with NODE's output multiplied by FACTOR (a Mul is inserted after
                             it in the model bytes before the session is made; needs the onnx package)
    kill-after:N             the process SIGKILLs itself on its N-th inference (like the OOM killer, mid-run)
    sleep:SECONDS            sleep before anything runs (a board that hangs)
The agent itself is not modified: only the runtime underneath it is.
"""
import os
import signal
import time

FAULT = os.environ.get("XQHIL_FAULT", "")
KIND, _, ARG = FAULT.partition(":")


def scaled_model(path, node_name, factor):
    """The bytes of the model at ``path`` with ``node_name``'s first output multiplied by ``factor``."""
    import onnx
    from onnx import helper, numpy_helper
    import numpy as np

    model = onnx.load(path)
    nodes = list(model.graph.node)
    index = next((i for i, n in enumerate(nodes) if n.name == node_name), None)
    if index is None:
        raise RuntimeError("fault scale-node: no node named %r in %s" % (node_name, path))
    target = nodes[index]
    original = target.output[0]
    target.output[0] = original + "_fault_unscaled"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(factor, np.float32), "fault_factor"))
    mul = helper.make_node("Mul", [target.output[0], "fault_factor"], [original], name="fault_scale")
    model.graph.node.insert(index + 1, mul)
    return model.SerializeToString()


if KIND == "sleep":
    time.sleep(float(ARG))
elif KIND in ("perturb-int8", "kill-after", "nonfinite-int8", "scale-node"):
    import numpy as np
    import onnxruntime

    _Real = onnxruntime.InferenceSession
    _calls = [0]

    class FaultySession(_Real):
        def __init__(self, path, *args, **kwargs):
            self._fault_int8 = os.path.basename(str(path)).startswith("int8")
            if KIND == "scale-node" and self._fault_int8:
                node, _, factor = ARG.rpartition(":")
                path = scaled_model(str(path), node, float(factor))
            super().__init__(path, *args, **kwargs)
            self._fault_rng = np.random.default_rng(0)

        def run(self, *args, **kwargs):
            _calls[0] += 1
            if KIND == "kill-after" and _calls[0] >= int(ARG):
                os.kill(os.getpid(), signal.SIGKILL)
            outputs = super().run(*args, **kwargs)
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
