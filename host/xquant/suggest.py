"""'Did you mean' suggestions: the closest known name by edit distance with transpositions."""
from __future__ import annotations

from typing import Iterable, List, Optional


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap two neighbours)."""
    prev2: List[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def closest(name: str, known: Iterable[str], limit: int = 1) -> List[str]:
    """Up to ``limit`` known names within a distance of about a third of the name's length."""
    scored = sorted((edit_distance(name.lower(), k.lower()), k) for k in known)
    budget = max(2, len(name) // 3)
    return [k for d, k in scored if d <= budget][:limit]


def did_you_mean(name: str, known: Iterable[str]) -> Optional[str]:
    found = closest(name, known)
    return found[0] if found else None
