"""Claims: a paper's statement, a check over an experiment's results, the measured figure.

A claim's `check(results)` returns `(measured, holds)` or `(measured, holds, detail)`:
`measured` is the figure shown beside the paper's statement (a number or a short string),
`holds` a bool, and `detail` an optional longer explanation (e.g. disagreements listed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str  # the paper's statement, with its section/table
    check: Callable[[dict[str, Any]], tuple]

    def evaluate(self, results: dict[str, Any]) -> dict[str, Any]:
        """One entry of claims.json. A check that crashes is a claim that does not hold."""
        try:
            measured, holds, *rest = self.check(results)
        except Exception as e:  # a broken check must show up in the report, not vanish
            return {
                "id": self.id,
                "statement": self.statement,
                "measured": None,
                "holds": False,
                "detail": f"check failed: {type(e).__name__}: {e}",
            }
        entry = {
            "id": self.id,
            "statement": self.statement,
            "measured": measured,
            "holds": bool(holds),
        }
        if rest and rest[0]:
            entry["detail"] = rest[0]
        return entry


def evaluate_claims(claims: list[Claim], results: dict[str, Any]) -> list[dict[str, Any]]:
    return [c.evaluate(results) for c in claims]
