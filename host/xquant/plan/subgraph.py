"""Subgraphs captured by boundary edges (custom_setting) and the reachability they are made of.

A subgraph with input edges I and output edges O is the set of nodes that are both
* forward-reachable from I: consumers of I, then consumers of their outputs, never past a tensor of O;
* backward-reachable from O: producers of O, then producers of their inputs, never past a tensor of I.
Read-only: it names nodes, it never edits the graph."""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Sequence, Set, Tuple

from ..errors import ConfigError
from ..suggest import closest
from .graph import GraphIndex

log = logging.getLogger(__name__)


def forward_nodes(index: GraphIndex, starts: Iterable[str], stops: Iterable[str] = ()) -> Set[str]:
    """Names of nodes downstream of the tensors ``starts``; tensors in ``stops`` are not followed."""
    stop = set(stops)
    seen: Set[str] = set()
    todo = list(starts)
    while todo:
        for node in index.consumers.get(todo.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            todo.extend(out for out in node.output if out and out not in stop)
    return seen


def backward_nodes(index: GraphIndex, starts: Iterable[str], stops: Iterable[str] = ()) -> Set[str]:
    """Names of nodes upstream of the tensors ``starts``; tensors in ``stops`` are not followed."""
    stop = set(stops)
    seen: Set[str] = set()
    todo = list(starts)
    while todo:
        producer = index.producer.get(todo.pop())
        if producer is None or producer.name in seen:
            continue
        seen.add(producer.name)
        todo.extend(name for name in producer.input if name and name not in stop)
    return seen


def known_tensors(index: GraphIndex) -> Set[str]:
    names = set(index.inputs) | set(index.producer)
    for node in index.nodes:
        names.update(n for n in node.input if n)
    return names


def unknown_name(index: GraphIndex, names: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(the first name the model does not have, a 'Close matches: ...' hint) or None."""
    known = known_tensors(index)
    for name in names:
        if name not in known:
            close = closest(name, known, limit=3)
            return name, (f" Close matches: {', '.join(repr(c) for c in close)}." if close else "")
    return None


def check_names(index: GraphIndex, names: Sequence[str], where: str) -> None:
    """ConfigError for the first tensor name the model does not have, with the closest names it has."""
    missing = unknown_name(index, names)
    if missing:
        raise ConfigError(f"{where}: tensor '{missing[0]}' does not exist in the model.{missing[1]}",
                          "Look the name up in the model (e.g. with netron) after simplification, "
                          "or set skip_onnxsim to true to keep the original graph.")


def enclosed_nodes(index: GraphIndex, inputs: Sequence[str], outputs: Sequence[str], where: str) -> Set[str]:
    """The nodes the edges ``inputs`` -> ``outputs`` enclose (see the module docstring)."""
    check_names(index, list(inputs) + list(outputs), where)
    forward = forward_nodes(index, inputs, stops=outputs)
    for out in outputs:
        producer = index.producer.get(out)
        if out in inputs or producer is None or producer.name not in forward:
            raise ConfigError(f"{where}: output '{out}' is not reachable from input_names "
                              f"{list(inputs)}, so the edges do not enclose a subgraph.",
                              "List the edges that enter the subgraph (all of its non-constant inputs) "
                              "and the ones that leave it.")
    nodes = forward & backward_nodes(index, outputs, stops=inputs)
    _warn_unused_inputs(index, inputs, outputs, nodes, where)
    return nodes


def _warn_unused_inputs(index: GraphIndex, inputs: Sequence[str], outputs: Sequence[str], nodes: Set[str],
                        where: str) -> None:
    unused: List[str] = [t for t in inputs if not any(n.name in nodes for n in index.consumers.get(t, []))]
    if unused:
        log.warning("%s: input edge(s) %s lead to none of the output_names %s and are ignored",
                    where, unused, list(outputs))
