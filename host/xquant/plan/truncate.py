"""truncate_var_names: split the graph at the named tensors into a quantized main part and a float tail.

The tail is every node downstream of the cut tensors. It may read the cut tensors, tensors it computes
itself, model inputs, constants and what the main part computes from shapes only (anchor grids from
Shape), and nothing else the main part computes: otherwise the names do not cut the graph in two.
The cut tensors are outputs of the main part and are quantized with it (the INT8
main part hands them to the tail through DequantizeLinear), so the float tail sees exactly what the
quantized main part produces and computes from it as the FP32 model does. Read-only: it names nodes."""
from __future__ import annotations

from typing import Sequence, Set

from ..errors import GraphError
from .graph import GraphIndex
from .ops import rule_for
from .subgraph import forward_nodes, unknown_name

FAILED = "truncate graph failed."
WHERE = "quantization_parameters.truncate_var_names"


def _fail(reason: str, hint: str) -> GraphError:
    return GraphError(f"{FAILED} {reason}", hint)


def _check_names(index: GraphIndex, names: Sequence[str]) -> None:
    missing = unknown_name(index, names)
    if missing:
        raise _fail(f"Tensor '{missing[0]}' in {WHERE} does not exist in the model.{missing[1]}",
                    "Look the name up in the model (e.g. with netron); set skip_onnxsim to true if the "
                    "simplifier removed it.")
    for name in names:
        if name in index.inputs:
            raise _fail(f"'{name}' in {WHERE} is a model input: cutting there leaves nothing to quantize.",
                        "Name the tensors where the post-processing starts.")
        if not index.consumers.get(name):
            raise _fail(f"'{name}' in {WHERE} is not read by any node (it is a model output), so nothing "
                        "follows the cut.", "Name the tensors where the post-processing starts.")


def _check_cut(index: GraphIndex, names: Sequence[str], tail: Set[str]) -> None:
    for name in names:
        producer = index.producer.get(name)
        if producer is not None and producer.name in tail:
            raise _fail(f"'{name}' in {WHERE} lies after the cut made by the other names "
                        f"(its node '{producer.name}' is already post-processing).",
                        "Remove it or name an earlier tensor.")
    live = index.data  # shape-derived tensors (anchor grids from Shape) are constant-like: the tail may read them
    for node in index.nodes:
        if node.name not in tail:
            continue
        for tensor in node.input:
            producer = index.producer.get(tensor)
            if tensor in live and tensor not in names and producer is not None and producer.name not in tail:
                raise _fail(f"The names in {WHERE} do not cut the graph in two: node '{node.name}' after the "
                            f"cut also reads '{tensor}', which is computed before it.",
                            f"Add '{tensor}' to truncate_var_names.")
    if not any(rule_for(n.op_type) for n in index.nodes if n.name not in tail):
        raise _fail(f"No quantizable op lies before the cut made by {list(names)}.",
                    "Name the tensors where the post-processing starts.")


def float_tail(index: GraphIndex, names: Sequence[str]) -> Set[str]:
    """Names of the nodes after the cut (kept float); GraphError 'truncate graph failed.' when it is no cut."""
    if not names:
        return set()
    _check_names(index, names)
    tail = forward_nodes(index, names)
    _check_cut(index, names, tail)
    return tail
