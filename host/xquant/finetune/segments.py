"""Run a model segment by segment, in graph order, over held samples, with the activations at each cut cached.

A layer-by-layer pass (bias correction) needs, for every layer, the quantized model's output at that layer
with every earlier layer already corrected. Running the whole model once per layer costs layers x model;
cutting the graph after each layer's node and running each piece once, on the cached activations that
cross the cut, costs one model run per sample. The caller may replace a cut's cached value (the corrected
layer output) before the next segment runs: later segments then see it, as if the model had been rerun."""
from __future__ import annotations

from typing import Dict, List, Sequence, Set

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..calibration.session import make_session
from ..model_io import graph_inputs
from .samples import RUN_BATCH


def _types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor shape inference knows (FLOAT assumed for the rest)."""
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:  # a model shape inference rejects: every crossing tensor is taken as float
        inferred = model.graph
    out = {}
    for value in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        out[value.name] = value.type.tensor_type.elem_type
    return out


def supported(model: onnx.ModelProto) -> bool:
    """Segments need flat graphs (a node with a subgraph, If/Loop/Scan, may read outer tensors implicitly)
    and inputs whose samples stack on axis 0 (cached tensors are split into chunks on axis 0)."""
    if any(gi.batch_axis != 0 for gi in graph_inputs(model)):
        return False
    return not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for n in model.graph.node for a in n.attribute)


SHAPE_LIMIT = 16  # values: a cached integer tensor this small and equal in every chunk is a computed shape
Chunks = List[np.ndarray]  # one tensor over all samples, as the batches it was run in


class SegmentRunner:
    """``step()`` runs the next segment (the nodes up to the last producer of the next request's tensors)
    and returns those tensors over all samples, as per-batch chunks; changing those arrays in place before
    the next ``step()`` changes what follows, and ``use_initializers`` swaps weights for the nodes not run yet."""

    def __init__(self, model: onnx.ModelProto, requests: Sequence[Sequence[str]], feeds: Dict[str, np.ndarray],
                 batch: int, device: str, what: str) -> None:
        self.model, self.batch, self.device, self.what = model, batch, device, what
        self.types = _types(model)
        self.init = {t.name: t for t in model.graph.initializer}
        self.const_nodes = self._constant_nodes(model)
        nodes = [n for n in model.graph.node if n.output[0] not in self.const_nodes]
        where = {o: i for i, n in enumerate(nodes) for o in n.output}
        self.ends = [max((where[n] for n in req if n in where), default=-1) for req in requests]
        self.nodes, self.requests = nodes, [list(r) for r in requests]
        self.last_use = self._last_use(nodes)
        self.wanted = {name: k for k, req in enumerate(self.requests) for name in req}  # last step asking
        total, size = int(next(iter(feeds.values())).shape[0]), batch or RUN_BATCH
        self.cache: Dict[str, Chunks] = {k: [v[i:i + size] for i in range(0, total, size)] for k, v in feeds.items()}
        self.chunks = -(-total // size)
        self.done = 0  # index of the first node not yet run
        self.k = 0

    def use_initializers(self, model: onnx.ModelProto) -> None:
        """Take ``model``'s initializers (same graph, new weights) for the segments still to run."""
        self.init = {t.name: t for t in model.graph.initializer}

    def _constant_nodes(self, model: onnx.ModelProto) -> Dict[str, onnx.NodeProto]:
        """{first output: node} of the nodes computed from initializers alone (weight DequantizeLinear,
        Constant): they carry no batch, so each segment that reads them recomputes them instead of caching."""
        const: Set[str] = set(self.init)
        out: Dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            if all(i in const for i in node.input if i):
                const.update(node.output)
                out[node.output[0]] = node
        return out

    def _with_constants(self, nodes: List[onnx.NodeProto]) -> List[onnx.NodeProto]:
        """``nodes`` preceded by the constant nodes they need (transitively), in graph order."""
        by_output = {o: n for n in self.const_nodes.values() for o in n.output}
        needed: Dict[int, onnx.NodeProto] = {}
        todo = [i for n in nodes for i in n.input if i in by_output]
        while todo:
            node = by_output[todo.pop()]
            if id(node) not in needed:
                needed[id(node)] = node
                todo.extend(i for i in node.input if i in by_output)
        order = {id(n): k for k, n in enumerate(self.const_nodes.values())}
        return sorted(needed.values(), key=lambda n: order[id(n)]) + list(nodes)

    def _last_use(self, nodes: List[onnx.NodeProto]) -> Dict[str, int]:
        last: Dict[str, int] = {}
        for i, node in enumerate(nodes):
            for name in node.input:
                if name:
                    last[name] = i
        return last

    def _segment(self, nodes: List[onnx.NodeProto], inputs: List[str], outputs: List[str],
                 constants: Dict[str, np.ndarray]) -> onnx.ModelProto:
        produced = {o for n in nodes for o in n.output}
        used = {i for n in nodes for i in n.input if i}
        graph = helper.make_graph(
            nodes, f"segment{self.k}", [helper.make_tensor_value_info(n, *self._cached_info(n)) for n in inputs],
            # a type shape inference does not know (after a contrib op: float16 models) is left to onnxruntime
            [helper.make_tensor_value_info(n, self.types[n], None) if self.types.get(n)
             else helper.make_empty_tensor_value_info(n) for n in outputs],
            [self.init[n] for n in sorted(used - produced) if n in self.init]
            + [numpy_helper.from_array(v, n) for n, v in constants.items()])
        segment = helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        return segment

    def _constant(self, name: str) -> bool:
        """A cached tensor that is the same small integer array in every chunk: a shape computed from the
        input's shape. It goes into the segment as a constant, so onnxruntime knows the shapes it makes
        (unknown, its full optimisation crashed with SIGSEGV on a float16 transformer's segment: a Reshape
        to a computed shape, zoo khmer_segmenter)."""
        chunks = self.cache.get(name) or []
        first = np.asarray(chunks[0]) if chunks else None
        if first is None or first.size > SHAPE_LIMIT or not np.issubdtype(first.dtype, np.integer):
            return False
        return all(np.array_equal(first, c) for c in chunks[1:])

    def _cached_info(self, name: str) -> tuple:
        """A segment input's element type and shape: those of the arrays cached for it (exact; an axis
        left free where the chunks differ in it: the last batch is short), else inference's type."""
        chunks = self.cache.get(name)
        if chunks:
            first = np.asarray(chunks[0])
            shapes = {np.shape(c) for c in chunks}
            if len({len(x) for x in shapes}) > 1:  # chunks of different ranks: no shape to declare
                return helper.np_dtype_to_tensor_dtype(first.dtype), None
            shape = [dims[0] if len(set(dims)) == 1 else f"d{axis}" for axis, dims in enumerate(zip(*shapes))]
            return helper.np_dtype_to_tensor_dtype(first.dtype), shape
        return self.types.get(name) or onnx.TensorProto.FLOAT, None

    def step(self) -> Dict[str, Chunks]:
        end, k = self.ends[self.k], self.k
        if end >= self.done:
            self._run(self._with_constants(self.nodes[self.done:end + 1]), end)
        out = {name: self.cache[name] for name in self.requests[k]}
        self.done, self.k = max(self.done, end + 1), k + 1
        for name in [n for n in self.cache if self.last_use.get(n, -1) < self.done and self.wanted.get(n, -1) <= k]:
            del self.cache[name]  # every node reading it has run, no later step asks for it
        return out

    def _run(self, nodes: List[onnx.NodeProto], end: int) -> None:
        produced: Set[str] = {o for n in nodes for o in n.output if o}
        inputs = sorted({i for n in nodes for i in n.input if i and i not in produced and i not in self.init})
        outputs = sorted(o for o in produced if self.last_use.get(o, -1) > end or self.wanted.get(o, -1) >= self.k)
        constants = {n: np.asarray(self.cache[n][0]) for n in inputs if self._constant(n)}
        inputs = [n for n in inputs if n not in constants]
        # the raw onnxruntime session: cached tensors are already laid out as the model holds them
        sess = make_session(self._segment(nodes, inputs, outputs, constants), self.device, self.what).session
        results: Dict[str, Chunks] = {name: [] for name in outputs}
        for i in range(self.chunks):
            for name, value in zip(outputs, sess.run(outputs, {n: self.cache[n][i] for n in inputs})):
                results[name].append(value)
        self.cache.update(results)


class WholeRunner:
    """SegmentRunner's interface for graphs it cannot cut (subgraph nodes): each step reruns the whole model
    (with the latest initializers); in-place changes of returned chunks do not reach later steps."""

    def __init__(self, model: onnx.ModelProto, requests: Sequence[Sequence[str]], feeds: Dict[str, np.ndarray],
                 batch: int, device: str, what: str) -> None:
        self.model, self.requests, self.feeds = model, [list(r) for r in requests], feeds
        self.batch, self.device, self.what, self.k = batch, device, what, 0

    def use_initializers(self, model: onnx.ModelProto) -> None:
        self.model = model

    def step(self) -> Dict[str, Chunks]:
        from ..calibration.session import with_outputs
        from .samples import run_session

        names = self.requests[self.k]
        self.k += 1
        sess = make_session(with_outputs(self.model, names), self.device, self.what)
        return {name: [value] for name, value in run_session(sess, self.feeds, names, self.batch).items()}


def runner_for(model: onnx.ModelProto, requests: Sequence[Sequence[str]], feeds: Dict[str, np.ndarray], batch: int,
               device: str, what: str):
    """A SegmentRunner, or a WholeRunner for a graph with subgraph nodes."""
    kind = SegmentRunner if supported(model) else WholeRunner
    return kind(model, requests, feeds, batch, device, what)
