"""Progress per stage: a tqdm bar on a TTY (off with --quiet or without a TTY), log lines otherwise."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

log = logging.getLogger(__name__)


class Stages:
    def __init__(self, stages: Sequence[str], quiet: bool = False) -> None:
        self.stages = list(stages)
        self.current: Optional[str] = None
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.stages), desc="xqhil", unit="stage", leave=False, file=sys.stderr)

    def start(self, stage: str) -> None:
        if self.current is not None and self.bar is not None:
            self.bar.update(1)
        self.current = stage
        log.info("[%d/%d] %s", self.stages.index(stage) + 1 if stage in self.stages else 0, len(self.stages), stage)
        if self.bar is not None:
            self.bar.set_description(f"xqhil: {stage}")

    def detail(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        log.debug("%s: %s", self.current, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(len(self.stages) - self.bar.n)
            self.bar.close()
