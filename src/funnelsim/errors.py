"""The error every bad input raises: one home, so each layer can raise it."""

from __future__ import annotations

__all__ = ["FunnelDataError"]


class FunnelDataError(ValueError):
    """Bad input: the message says where (source, row, column), what, and what to do."""

    def __init__(self, problem: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None, value=None, hint: str | None = None):
        self.problem, self.source, self.row, self.column = problem, source, row, column
        self.value, self.hint = value, hint
        where = ", ".join(p for p in (
            source,
            f"row {row}" if row is not None else None,
            f"column '{column}'" if column else None,
        ) if p)
        shown = f" (value {value!r})" if value is not None else ""
        message = f"{where}: {problem}{shown}." if where else f"{problem}{shown}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
