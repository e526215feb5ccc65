"""A stand-in for SpaceMIT's ``spacemit_ort`` module (the real EP is not available here), honouring the same
switches so the harness's plumbing of per-run environment can be tested:

    SPACEMIT_EP_DISABLE_OP_TYPE_FILTER=Conv,Gemm   op types kept off the (pretend) EP
    SPACEMIT_EP_DISABLE_OP_NAME_FILTER=conv,fc     node names kept off the (pretend) EP
    SPACEMIT_EP_DUMP_TENSORS=DIR                   every run's outputs saved as DIR/<model>-<n>.npz, and
                                                   DIR/placement-<model>.json: which nodes the EP would take

It computes nothing differently: onnxruntime's CPU provider still runs the model.
"""
import json
import os

import numpy as np
import onnxruntime

_Real = onnxruntime.InferenceSession


def _split(name):
    return [v for v in os.environ.get(name, "").split(",") if v]


class StandInSession(_Real):
    def __init__(self, path, *args, **kwargs):
        super().__init__(path, *args, **kwargs)
        self._standin_model = os.path.splitext(os.path.basename(str(path)))[0]
        self._standin_runs = 0
        folder = os.environ.get("SPACEMIT_EP_DUMP_TENSORS")
        if folder:
            import onnx

            types, names = _split("SPACEMIT_EP_DISABLE_OP_TYPE_FILTER"), _split("SPACEMIT_EP_DISABLE_OP_NAME_FILTER")
            nodes = onnx.load(str(path)).graph.node
            placement = {n.name: ("CPU" if n.op_type in types or n.name in names else "SpaceMIT") for n in nodes}
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "placement-%s.json" % self._standin_model), "w") as handle:
                json.dump(placement, handle)

    def run(self, *args, **kwargs):
        outputs = super().run(*args, **kwargs)
        folder = os.environ.get("SPACEMIT_EP_DUMP_TENSORS")
        if folder:
            self._standin_runs += 1
            np.savez(os.path.join(folder, "%s-%d.npz" % (self._standin_model, self._standin_runs)),
                     **{"out%d" % i: o for i, o in enumerate(outputs)})
        return outputs


onnxruntime.InferenceSession = StandInSession
