"""A terminal table that never cuts a cell: :class:`FitTable`.

Rich shrinks a table wider than the console by cutting its cells ("6,802,7…"). A
:class:`FitTable` is built like a ``rich.table.Table`` (``add_column``, ``add_row``,
``add_section``) but lays itself out at render time, for the width it is given:

1. the whole table, when it fits;
2. else split into up to four tables, each repeating the key columns (stage, segment,
   origin...) with an even share of the other columns, under one title and above one caption;
3. else (more parts needed, or the key columns and a single other column do not fit)
   stacked: one block of ``column  value`` lines per row.

Every cell is kept whole (``no_wrap``); only titles and captions wrap, at spaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["FitTable"]

_UNLIMITED = 1_000_000
MAX_PARTS = 4  # a table needing more parts than this is stacked instead


@dataclass(frozen=True)
class _Column:
    header: str
    justify: str
    key: bool


class FitTable:
    """A table laid out to the console's width without cutting any cell (see the module)."""

    def __init__(self, title: str | None = None, caption: str | None = None, caption_justify: str = "center"):
        self.title, self.caption, self.caption_justify = title, caption, caption_justify
        self.columns: list[_Column] = []
        self.rows: list[tuple[list[str], bool]] = []

    def add_column(self, header: str, justify: str = "left", key: bool = False) -> None:
        """A column; ``key`` columns (the row's name: stage, segment, origin...) repeat in
        every part of a split table."""
        self.columns.append(_Column(header, justify, key))

    def add_row(self, *cells: str, end_section: bool = False) -> None:
        self.rows.append(([str(c) for c in cells], end_section))

    def add_section(self) -> None:
        """A line under the last row added."""
        if self.rows:
            self.rows[-1] = (self.rows[-1][0], True)

    # ------------------------------------------------------------------ layout

    def table(self, columns: list[int] | None = None, *, title: bool = True, caption: bool = True) -> Table:
        """A plain Rich table of these columns (default: all)."""
        columns = list(range(len(self.columns))) if columns is None else columns
        out = Table(title=self.title if title else None, caption=self.caption if caption else None,
                    caption_justify=self.caption_justify)
        for i in columns:
            c = self.columns[i]
            out.add_column(c.header, justify=c.justify, no_wrap=True)
        for cells, end_section in self.rows:
            out.add_row(*(cells[i] for i in columns), end_section=end_section)
        return out

    def parts(self, console: Console, width: int) -> list[list[int]] | None:
        """The column groups to print one table each (one group: the whole table), as even
        as they fit; None when even the key columns with one other do not fit ``width``, or
        more than :data:`MAX_PARTS` parts would be needed."""
        everything = list(range(len(self.columns)))
        if self._width(console, everything) <= width:
            return [everything]
        keys = [i for i, c in enumerate(self.columns) if c.key]
        others = [i for i, c in enumerate(self.columns) if not c.key]
        fits = lambda group: self._width(console, sorted(keys + group)) <= width
        groups: list[list[int]] = [[]]
        for i in others:
            if not fits([i]):
                return None
            if groups[-1] and not fits(groups[-1] + [i]):
                groups.append([])
            groups[-1].append(i)
        if len(groups) > MAX_PARTS:
            return None
        size, extra = divmod(len(others), len(groups))  # the same columns, spread evenly if they fit
        bounds = [0]
        for n in range(len(groups)):
            bounds.append(bounds[-1] + size + (n < extra))
        even = [others[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        if all(fits(g) for g in even):
            groups = even
        return [sorted(keys + g) for g in groups]

    def _width(self, console: Console, columns: list[int]) -> int:
        table = self.table(columns, title=False, caption=False)
        return Measurement.get(console, console.options.update_width(_UNLIMITED), table).maximum

    def stacked(self) -> Group:
        """One block per row: the key cells on a line, then ``column  value`` lines."""
        keys = [i for i, c in enumerate(self.columns) if c.key]
        blocks = [Text.from_markup(self.title, style="italic", justify="center")] if self.title else []
        for cells, _ in self.rows:
            if keys:
                blocks.append(Text.from_markup(" · ".join(cells[i] for i in keys), style="bold"))
            grid = Table.grid(padding=(0, 2))
            grid.add_column(overflow="fold")
            grid.add_column(justify="right", no_wrap=True)
            for i, c in enumerate(self.columns):
                if i not in keys:
                    grid.add_row(f"  {c.header}", cells[i])
            blocks.append(grid)
        if self.caption:
            blocks.append(Text.from_markup(self.caption, style="dim", justify=self.caption_justify))
        return Group(*blocks)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        parts = self.parts(console, options.max_width)
        if parts is None:
            yield self.stacked()
        elif len(parts) == 1:
            yield self.table()
        else:  # title and caption across the whole width, not squeezed above one part
            if self.title:
                yield Text.from_markup(self.title, style="italic", justify="center")
            for columns in parts:
                yield self.table(columns, title=False, caption=False)
            if self.caption:
                yield Text.from_markup(self.caption, style="dim", justify=self.caption_justify)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)
