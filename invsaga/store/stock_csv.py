"""Reading and validating a stock CSV (``sku,location,quantity``) in chunks, routed to shards.

Every bad row is reported with its line number in one pass. SKU and location rules come from the
domain's pydantic types, compiled once to a regex so the hot loop never builds a model per row.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, get_args

import annotated_types
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import DEFAULT_LOCATION, Location, Sku
from invsaga.store.routing import ShardRouter, slot_of

HEADER = ["sku", "location", "quantity"]
MAX_QUANTITY = 2**63 - 1  # on_hand is a bigint
#: The refusal lists this many problems; a file of ten million bad rows should not become a list of them.
MAX_REPORTED_PROBLEMS = 1_000
StagedRow = tuple[int, str, str, int, int]  # (line, sku, location, quantity, slot)


class RowProblem(BaseModel):
    line: int
    reason: str


class RejectedRow(BaseModel):
    line: int
    sku: str
    location: str
    quantity: int
    reserved: int
    reason: str


class CodeRule:
    """A domain code type (``Sku``, ``Location``) as one compiled regex and length bounds.

    The rules are read from the pydantic type itself, so the domain stays their one source of truth; the
    hot path pays for a regex match, and only a failing value is handed to pydantic for its message.
    """

    def __init__(self, code_type: Any, what: str) -> None:
        constraints = [c for arg in get_args(code_type) if isinstance(arg, FieldInfo) for c in arg.metadata]
        self.min_length, self.max_length, pattern = 0, sys.maxsize, None
        for constraint in constraints:
            if isinstance(constraint, annotated_types.MinLen):
                self.min_length = constraint.min_length
            elif isinstance(constraint, annotated_types.MaxLen):
                self.max_length = constraint.max_length
            pattern = getattr(constraint, "pattern", None) or pattern
        if pattern is None:
            raise TypeError(f"{what} type carries no pattern")
        # fullmatch, not match: pydantic's `$` never matches before a trailing newline.
        self._fullmatch = re.compile(pattern).fullmatch
        self._adapter: TypeAdapter[str] = TypeAdapter(code_type)
        self.what = what

    def accepts(self, value: str) -> bool:
        return self.min_length <= len(value) <= self.max_length and self._fullmatch(value) is not None

    def require(self, value: str) -> str:
        if not self.accepts(value):
            raise InvalidInput(self.explain(value), **{self.what: value})
        return value

    def explain(self, value: str) -> str:
        try:
            self._adapter.validate_python(value)
        except ValidationError as exc:
            return f"invalid {self.what} {value!r}: {exc.errors()[0]['msg']}"
        return f"invalid {self.what} {value!r}"


SKU_RULE = CodeRule(Sku, "sku")
LOCATION_RULE = CodeRule(Location, "location")


def _quantity_of(value: str) -> int | None:
    quantity = int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else None
    return quantity if quantity is not None and quantity <= MAX_QUANTITY else None


class ProblemCollector:
    """A CSV read line by line whose problems are collected rather than raised, so one pass reports
    every bad line (the first ``MAX_REPORTED_PROBLEMS`` of them by line, and how many in all)."""

    def __init__(self, lines: Iterable[str | bytes]) -> None:
        self._reader = csv.reader(self._text(lines))
        self._header_seen = False
        self.rows_read = 0
        self.problem_count = 0
        self.problems: list[RowProblem] = []

    def problem(self, line: int, reason: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(RowProblem(line=line, reason=reason))

    def _text(self, lines: Iterable[str | bytes]) -> Iterator[str]:
        """Decode bytes line by line, so a byte that is not UTF-8 is reported at its own line."""
        for number, line in enumerate(lines, start=1):
            if isinstance(line, str):
                yield line
                continue
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problem(number, f"not UTF-8 text ({exc.reason} at byte {exc.start}); stopped reading")
                return


class CsvRows(ProblemCollector):
    """Reads and validates the stock CSV chunk by chunk, routing valid rows to their shard."""

    def __init__(self, lines: Iterable[str | bytes], router: ShardRouter) -> None:
        super().__init__(lines)
        self._router = router
        self._exhausted = False

    def next_chunk(self, size: int) -> list[list[StagedRow]] | None:
        """Up to ``size`` data rows, valid ones grouped by shard; None once the file is exhausted."""
        if self._exhausted:
            return None
        batches: list[list[StagedRow]] = [[] for _ in range(self._router.shard_count)]
        shard_of, sku_ok, location_ok = self._router.shard_of_slot, SKU_RULE.accepts, LOCATION_RULE.accepts
        reader, taken, last_sku, shard, slot = self._reader, 0, None, 0, 0
        try:
            for row in reader:
                if not row:
                    continue  # blank line
                line = reader.line_num
                if not self._header_seen:
                    self._check_header(line, row)
                    continue
                taken += 1
                if len(row) != 3:
                    self.problem(line, f"expected 3 fields (sku,location,quantity), got {len(row)}")
                else:
                    sku, location, raw_quantity = row
                    location = location or DEFAULT_LOCATION
                    quantity = _quantity_of(raw_quantity)
                    if quantity is not None and sku_ok(sku) and location_ok(location):
                        if sku != last_sku:  # files are usually grouped by sku; skip rehashing
                            last_sku, slot = sku, slot_of(sku)
                            shard = shard_of(slot)
                        batches[shard].append((line, sku, location, quantity, slot))
                    else:
                        self.problem(line, _explain(sku, location, raw_quantity))
                if taken == size:
                    break
            else:
                self._exhausted = True
        except csv.Error as exc:
            taken += 1
            self.problem(reader.line_num, f"unreadable CSV: {exc}")
        if self._exhausted and not self._header_seen:
            self._check_header(1, [])
        self.rows_read += taken
        return batches if taken else None

    def _check_header(self, line: int, row: list[str]) -> None:
        self._header_seen = True
        cells = [cell.strip().lower().removeprefix("\ufeff") for cell in row]
        if cells != HEADER:
            self.problem(line, f"expected the header {','.join(HEADER)}, got {','.join(row) or 'nothing'}")


def _explain(sku: str, location: str, raw_quantity: str) -> str:
    if not SKU_RULE.accepts(sku):
        return SKU_RULE.explain(sku)
    if not LOCATION_RULE.accepts(location):
        return LOCATION_RULE.explain(location)
    return f"quantity must be a whole number from 0 to {MAX_QUANTITY}, got {raw_quantity!r}"
