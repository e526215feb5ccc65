"""custom_setting: per-node settings from subgraphs captured by their boundary edges.

Settings are applied in config order; where subgraphs overlap, the later setting wins for every
field it sets (precision_level, calibration_type, max_percentile) and the earlier one keeps the
fields the later one leaves out."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence

from ..config.schema import CustomSetting
from .graph import GraphIndex
from .subgraph import enclosed_nodes


@dataclass(frozen=True)
class NodeSetting:
    precision_level: Optional[int] = None
    calibration_type: Optional[str] = None
    max_percentile: Optional[float] = None

    def overridden_by(self, setting: CustomSetting) -> "NodeSetting":
        fields = {k: getattr(setting, k) for k in ("precision_level", "calibration_type", "max_percentile")}
        return replace(self, **{k: v for k, v in fields.items() if v is not None})


def resolve_custom_settings(index: GraphIndex, settings: Sequence[CustomSetting]) -> Dict[str, NodeSetting]:
    """{node name: its merged setting} for every node inside at least one custom_setting subgraph."""
    by_node: Dict[str, NodeSetting] = {}
    for idx, setting in enumerate(settings):
        where = f"quantization_parameters.custom_setting[{idx}]"
        for name in enclosed_nodes(index, setting.input_names, setting.output_names, where):
            by_node[name] = by_node.get(name, NodeSetting()).overridden_by(setting)
    return by_node
