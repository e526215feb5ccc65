"""Fault injection for the harness tests: a board whose runtime misbehaves, selected by $XQHIL_FAULT.

Put this folder on the board Python's PYTHONPATH (``--python "env PYTHONPATH=DIR XQHIL_FAULT=... python3"``):
    perturb-int8:SCALE   INT8 models (file name int8.onnx) return outputs + SCALE * std(output) noise
    kill-after:N         the process SIGKILLs itself on its N-th inference (like the OOM killer, mid-run)
    sleep:SECONDS        sleep before anything runs (a board that hangs)
The agent itself is not modified: only the runtime underneath it is.
"""
import os
import signal
import time

FAULT = os.environ.get("XQHIL_FAULT", "")
KIND, _, ARG = FAULT.partition(":")

if KIND == "sleep":
    time.sleep(float(ARG))
elif KIND in ("perturb-int8", "kill-after"):
    import numpy as np
    import onnxruntime

    _Real = onnxruntime.InferenceSession
    _calls = [0]

    class FaultySession(_Real):
        def __init__(self, path, *args, **kwargs):
            super().__init__(path, *args, **kwargs)
            self._fault_int8 = os.path.basename(str(path)).startswith("int8")
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
            return outputs

    onnxruntime.InferenceSession = FaultySession
