"""A query language for runs (the GUI's filter box, ``amore-proto show --where``), parsed with lark
and evaluated vectorised over a :class:`~amore_gui.application.table_data.TableData`. No Qt.

Examples::

    run in 100..140 and sample ~ "lyso"
    pulse_energy > 0.5 mJ            # converted to the column's units with pint
    `Detector distance` >= 2 cm and good
    not has(sample) or failed(flaky)
    (xgm > 1e3 or status == "failed") and comment != none

Grammar, in words:

* column references: a name (``pulse_energy``), a title in backticks (`` `Pulse energy` ``,
  case-insensitive; the last part of a grouped title ``Checks/Flaky`` works too), or the fixed
  columns ``run``, ``proposal``, ``status``, ``comment``, ``start``, ``added``;
* literals: numbers with optional units (``0.5 mJ``, ``2cm``, ``1e-3``), strings in double or
  single quotes, ``true``/``false``, ``none``;
* ``== != < <= > >=`` (strings: case-insensitive equality, alphabetical order), ``~`` and ``!~``
  (case-insensitive "contains"), ``X in A..B`` (inclusive range), ``X in ("a", "b", 3)``;
* ``has(X)`` / ``has X`` (the cell has a value), ``failed(X)`` / ``failed X`` (the variable
  failed for the run); a bare column is true where its value is true or non-zero;
* ``and``, ``or``, ``not``, parentheses.

Missing values never satisfy a comparison (``x != 3`` is false where ``x`` has no value; use
``not has(x)`` for those). :class:`QueryError` (a ``ValueError``) carries the position of the
problem and a caret line under the expression.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from amore_gui.application.table_data import (C_ADDED, C_COMMENT, C_PROPOSAL, C_RUN, C_START,
                                             C_STATUS, K_ARRAY, K_BOOL, K_COMPLEX, K_ERROR,
                                             K_MISSING, K_NONE, K_NUMBER, K_SKIPPED, K_STRING,
                                             NSTATIC, RUN_STATUSES, TableData)

GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> not_
         | test

?test: operand COMP operand         -> compare
     | operand MATCH operand        -> match
     | operand _IN range_           -> in_range
     | operand _IN "(" literal ("," literal)* ","? ")" -> in_list
     | _HAS "(" column ")"          -> has
     | _HAS column                  -> has
     | _FAILED "(" column ")"       -> failed
     | _FAILED column               -> failed
     | "(" or_expr ")"
     | column                       -> truthy

range_: number ".." number

?operand: column | literal

column: NAME     -> name
      | TITLE    -> title

?literal: number
        | STRING   -> string
        | _TRUE    -> true
        | _FALSE   -> false
        | _NONE    -> none

number: SIGNED_NUMBER UNIT?

_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_HAS.2: /has\b/i
_FAILED.2: /failed\b/i
_TRUE.2: /true\b/i
_FALSE.2: /false\b/i
_NONE.2: /none\b/i

COMP: "==" | "!=" | "<=" | ">=" | "<" | ">" | "="
MATCH: "!~" | "~"
NAME: /[A-Za-z_][A-Za-z0-9_.]*/
TITLE: /`[^`]+`/
STRING: /"(\\.|[^"\\])*"/ | /'(\\.|[^'\\])*'/
SIGNED_NUMBER.3: /[+-]?(\d+(\.(?!\.)\d*)?|\.\d+)([eE][+-]?\d+)?/
UNIT.1: /(?!(and|or|not|in)\b)[A-Za-zµμ°%Å][A-Za-z0-9µμ°%Å_]*([\/*^][A-Za-z0-9µμ°%Å_]+)*/

%import common.WS
%ignore WS
"""

_parser = None
_parser_lock = threading.Lock()


def _get_parser():
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                from lark import Lark
                _parser = Lark(GRAMMAR, parser="lalr", propagate_positions=True,
                               maybe_placeholders=False)
    return _parser


class QueryError(ValueError):
    """An expression that cannot be parsed or applied. ``pos`` (0-based character offset,
    or None) is where the problem is; ``str()`` includes the expression with a caret."""

    def __init__(self, message: str, expr: str = "", pos: int | None = None):
        self.message, self.expr, self.pos = message, expr, pos
        text = message
        if expr and pos is not None:
            text += f" (at position {pos + 1})\n  {expr}\n  {' ' * pos}^"
        super().__init__(text)


# --------------------------------------------------------------------------------------------
# values of one column for some rows

@dataclass
class _Vec:
    """Values of an operand for the evaluated rows: ``num`` float (NaN: no number), ``text``
    object array of str or None, ``has`` (a value of any kind), ``units``."""

    num: np.ndarray | None
    text: np.ndarray | None
    has: np.ndarray
    failed: np.ndarray
    units: str | None = None
    is_bool: bool = False


_TEXT_KINDS = (K_STRING, K_COMPLEX, K_ARRAY)
#: kind code -> is text / has no value (lookup tables: cheaper than np.isin, above all for the
#: one-row evaluation of a live update)
_IS_TEXT = np.zeros(256, bool)
_IS_TEXT[list(_TEXT_KINDS)] = True
_NO_VALUE = np.zeros(256, bool)
_NO_VALUE[[K_MISSING, K_NONE, K_ERROR, K_SKIPPED]] = True


def _column_getter(data: TableData, col: int) -> Callable[[TableData, np.ndarray | slice], _Vec]:
    key = data.columns[col].key
    units = data.columns[col].units
    if col < NSTATIC:
        def static(d: TableData, rows):
            n = len(d.run[:d.nrows][rows])
            no = np.zeros(n, bool)
            if key in (C_RUN, C_PROPOSAL, C_START, C_ADDED):
                arr = {C_RUN: d.run, C_PROPOSAL: d.proposal, C_START: d.start_time,
                       C_ADDED: d.added_at}[key][:d.nrows][rows].astype(float)
                return _Vec(arr, None, ~np.isnan(arr), no)
            if key == C_COMMENT:
                texts = np.array(d.comment[:d.nrows], object)[rows]
                has = np.fromiter((t is not None and t != "" for t in texts), bool, len(texts))
                return _Vec(None, texts, has, no)
            if key == C_STATUS:
                names = np.array(RUN_STATUSES, object)[d.status[:d.nrows][rows]]
                return _Vec(None, names, np.ones(n, bool), no)
            return _Vec(np.full(n, np.nan), None, no, no)
        return static
    v = col - NSTATIC

    def variable(d: TableData, rows):
        kinds = d.kind[:d.nrows, v][rows]
        isnum = (kinds == K_NUMBER) | (kinds == K_BOOL)
        num = np.where(isnum, d.num[:d.nrows, v][rows], np.nan)
        istext = _IS_TEXT[kinds]
        text = None
        if istext.any():
            text = np.where(istext, d.obj[:d.nrows, v][rows], None)
        has = ~_NO_VALUE[kinds]
        is_bool = bool(isnum.any()) and bool(np.all(kinds[isnum] == K_BOOL))
        return _Vec(num, text, has, kinds == K_ERROR, units, is_bool)
    return variable


def _find_column(data: TableData, ref: str, expr: str, pos: int) -> int:
    """Table column of a name or title reference. Raises :class:`QueryError`."""
    fixed = {"run": C_RUN, "proposal": C_PROPOSAL, "status": C_STATUS, "comment": C_COMMENT,
             "start": C_START, "added": C_ADDED}
    c = data.col_of(ref)
    if c is not None:
        return c
    if ref.lower() in fixed:
        return data.col_of(fixed[ref.lower()])
    low = ref.lower()
    for i, col in enumerate(data.columns):
        if col.key.lower() == low or (col.title or "").lower() == low:
            return i
    for i, col in enumerate(data.columns):
        if (col.title or "").split("/")[-1].strip().lower() == low:
            return i
    raise QueryError(f"no column named {ref!r}", expr, pos)


def _unescape(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


# --------------------------------------------------------------------------------------------
# compilation: lark tree -> function (data, rows) -> bool mask

@dataclass
class _Lit:
    kind: str            # number, string, bool, none
    value: object = None
    units: str | None = None
    pos: int = 0


class Query:
    """A compiled expression for one table layout (its columns and units).

    ``Query(expr, data)`` parses and checks ``expr`` against ``data``'s columns; raises
    :class:`QueryError` (parse errors, unknown columns, incompatible units). :meth:`mask`
    evaluates it for all rows; :meth:`accepts` for one row. Compile again after the columns
    change (:attr:`column_keys` says which it uses).
    """

    def __init__(self, expr: str, data: TableData):
        self.expr = expr
        self.column_keys: set[str] = set()
        tree = parse(expr)
        self._fn = self._compile(tree, data)

    # -- public ----------------------------------------------------------------------------
    def mask(self, data: TableData, rows=None) -> np.ndarray:
        """Boolean array over ``rows`` (default: all rows ``0..nrows-1``)."""
        rows = slice(0, data.nrows) if rows is None else rows
        m = self._fn(data, rows)
        return np.asarray(m, bool)

    def accepts(self, data: TableData, row: int) -> bool:
        return bool(self.mask(data, np.array([row]))[0])

    # -- compilation -----------------------------------------------------------------------
    def _err(self, msg, node_or_pos) -> QueryError:
        pos = node_or_pos if isinstance(node_or_pos, int) else _pos(node_or_pos)
        return QueryError(msg, self.expr, pos)

    def _compile(self, t, data):
        from lark import Tree
        if not isinstance(t, Tree):
            raise self._err(f"unexpected {t!r}", 0)
        op = t.data
        if op == "or_expr":
            fs = [self._compile(c, data) for c in t.children]
            return lambda d, r: _reduce(np.logical_or, [f(d, r) for f in fs])
        if op == "and_expr":
            fs = [self._compile(c, data) for c in t.children]

            def and_(d, r):
                m = fs[0](d, r)
                for f in fs[1:]:
                    if not m.any():
                        break
                    m = m & f(d, r)
                return m
            return and_
        if op == "not_":
            f = self._compile(t.children[0], data)
            return lambda d, r: ~f(d, r)
        if op in ("has", "failed", "truthy"):
            g = self._column(t.children[0], data)
            if op == "has":
                return lambda d, r: g(d, r).has
            if op == "failed":
                return lambda d, r: g(d, r).failed

            def truthy(d, r):
                v = g(d, r)
                m = np.zeros(len(v.has), bool)
                if v.num is not None:
                    with np.errstate(invalid="ignore"):
                        m |= (v.num != 0) & ~np.isnan(v.num)
                if v.text is not None:
                    m |= np.fromiter((bool(s) for s in v.text), bool, len(v.text))
                return m
            return truthy
        if op == "compare":
            a, cmp_tok, b = t.children
            return self._compare(a, str(cmp_tok), b, data, _pos(cmp_tok))
        if op == "match":
            a, tok, b = t.children
            neg = str(tok) == "!~"
            ga = self._operand(a, data)
            if isinstance(ga, _Lit) or not isinstance(self._operand(b, data), _Lit) \
                    or self._operand(b, data).kind != "string":
                raise self._err("~ needs a column on the left and a quoted text on the right",
                                _pos(tok))
            needle = self._operand(b, data).value.lower()

            def match(d, r):
                v = ga(d, r)
                texts = v.text if v.text is not None else _num_text(v)
                m = np.fromiter((s is not None and needle in str(s).lower() for s in texts),
                                bool, len(v.has))
                return ~m & v.has if neg else m
            return match
        if op == "in_range":
            a, rng = t.children
            lo, hi = (self._literal(c) for c in rng.children)
            ga = self._operand(a, data)
            if isinstance(ga, _Lit):
                raise self._err("'in' needs a column on the left", a)
            ca = self._cmp_num(ga, lo, ">=", data, a)
            cb = self._cmp_num(ga, hi, "<=", data, a)
            return lambda d, r: ca(d, r) & cb(d, r)
        if op == "in_list":
            a, *items = t.children
            fs = [self._compare(a, "==", it, data, _pos(it)) for it in items]
            return lambda d, r: _reduce(np.logical_or, [f(d, r) for f in fs])
        raise self._err(f"cannot evaluate {op}", t)

    def _column(self, node, data):
        ref = str(node.children[0])
        if node.data == "title":
            ref = ref[1:-1]
        col = _find_column(data, ref, self.expr, _pos(node))
        self.column_keys.add(data.columns[col].key)
        return _column_getter(data, col)

    def _literal(self, node) -> _Lit:
        from lark import Tree
        if isinstance(node, Tree):
            if node.data == "number":
                num = float(node.children[0])
                units = str(node.children[1]) if len(node.children) > 1 else None
                if units:
                    from backend.units import UnitError, normalise_units
                    try:
                        units = normalise_units(units)
                    except UnitError as e:
                        raise self._err(str(e), _pos(node.children[1])) from None
                return _Lit("number", num, units, _pos(node))
            if node.data == "string":
                return _Lit("string", _unescape(str(node.children[0])), None, _pos(node))
            if node.data in ("true", "false"):
                return _Lit("bool", node.data == "true", None, _pos(node))
            if node.data == "none":
                return _Lit("none", None, None, _pos(node))
        raise self._err(f"not a value: {node}", 0)

    def _operand(self, node, data):
        from lark import Tree
        if isinstance(node, Tree) and node.data in ("name", "title"):
            return self._column(node, data)
        return self._literal(node)

    def _compare(self, a, op, b, data, pos):
        if op == "=":
            op = "=="
        ga, gb = self._operand(a, data), self._operand(b, data)
        if isinstance(ga, _Lit) and not isinstance(gb, _Lit):
            ga, gb, op = gb, ga, _FLIP[op]
            a, b = b, a
        if isinstance(ga, _Lit):
            raise self._err("a comparison needs at least one column", pos)
        if not isinstance(gb, _Lit):    # column against column
            return self._cmp_columns(ga, op, gb, data, pos)
        lit = gb
        if lit.kind == "none":
            if op not in ("==", "!="):
                raise self._err("none can only be compared with == or !=", pos)
            return (lambda d, r: ~ga(d, r).has) if op == "==" else (lambda d, r: ga(d, r).has)
        if lit.kind == "bool":
            if op not in ("==", "!="):
                raise self._err("true/false can only be compared with == or !=", pos)
            want = 1.0 if lit.value else 0.0

            def cmp_bool(d, r):
                v = ga(d, r)
                if v.num is None:
                    return np.zeros(len(v.has), bool)
                with np.errstate(invalid="ignore"):
                    eq = (v.num != 0) == bool(want)
                eq &= ~np.isnan(v.num)
                return eq if op == "==" else (~eq & ~np.isnan(v.num))
            return cmp_bool
        if lit.kind == "string":
            return self._cmp_text(ga, op, lit.value)
        return self._cmp_num(ga, lit, op, data, a)

    def _cmp_num(self, getter, lit: _Lit, op, data, node):
        if lit.kind != "number":
            raise self._err("a range needs numbers", lit.pos)
        units = self._units_of(getter, data)
        x = lit.value
        if lit.units is not None:
            from backend.units import UnitError, convert
            if units is None:
                raise self._err(f"{_fmt(x)} {lit.units} has units, but the column has none",
                                lit.pos)
            try:
                x = convert(x, lit.units, units)
            except UnitError as e:
                raise self._err(f"cannot compare a column in {units} with {lit.units}: {e}",
                                lit.pos) from None
        f = _OPS[op]

        def cmp(d, r):
            v = getter(d, r)
            if v.num is None:
                if v.text is not None and op in ("==", "!="):   # numbers typed as text
                    t = _fmt(x)
                    eq = np.fromiter((s is not None and str(s) == t for s in v.text), bool,
                                     len(v.has))
                    return eq if op == "==" else (~eq & v.has)
                return np.zeros(len(v.has), bool)
            with np.errstate(invalid="ignore"):
                m = f(v.num, x)
            return m & ~np.isnan(v.num)
        return cmp

    def _cmp_text(self, getter, op, s: str):
        low = s.lower()
        f = _OPS[op]

        def cmp(d, r):
            v = getter(d, r)
            texts = v.text if v.text is not None else _num_text(v)
            if op in ("==", "!="):
                eq = np.fromiter((t is not None and str(t).lower() == low for t in texts), bool,
                                 len(v.has))
                return eq if op == "==" else (~eq & v.has)
            return np.fromiter((t is not None and f(str(t).lower(), low) for t in texts), bool,
                               len(v.has))
        return cmp

    def _cmp_columns(self, ga, op, gb, data, pos):
        ua, ub = self._units_of(ga, data), self._units_of(gb, data)
        scale = 1.0
        if ua and ub and ua != ub:
            from backend.units import UnitError, factor
            try:
                scale = factor(ub, ua)
            except UnitError as e:
                raise self._err(f"cannot compare columns in {ua} and {ub}: {e}", pos) from None
        f = _OPS[op]

        def cmp(d, r):
            a, b = ga(d, r), gb(d, r)
            if a.num is not None and b.num is not None:
                with np.errstate(invalid="ignore"):
                    return f(a.num, b.num * scale) & ~np.isnan(a.num) & ~np.isnan(b.num)
            ta = a.text if a.text is not None else _num_text(a)
            tb = b.text if b.text is not None else _num_text(b)
            return np.fromiter((x is not None and y is not None and f(str(x).lower(),
                                                                     str(y).lower())
                                for x, y in zip(ta, tb)), bool, len(a.has))
        return cmp

    def _units_of(self, getter, data) -> str | None:
        v = getter(data, slice(0, 0))
        return v.units or None


_OPS = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
        ">": np.greater, ">=": np.greater_equal}
_OPS = {k: (lambda f: (lambda a, b: f(a, b)))(f) for k, f in _OPS.items()}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _reduce(f, arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = f(out, a)
    return out


def _num_text(v: _Vec) -> np.ndarray:
    if v.num is None:
        return np.full(len(v.has), None, object)
    return np.array([None if math.isnan(x) else _fmt(x) for x in v.num], object)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _pos(node) -> int:
    from lark import Token
    if isinstance(node, Token):
        return node.start_pos or 0
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return meta.start_pos
    for c in getattr(node, "children", ()):
        p = _pos(c)
        if p is not None:
            return p
    return 0


def parse(expr: str):
    """The lark parse tree of ``expr``. Raises :class:`QueryError` pointing at the position
    of a syntax error."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, \
        UnexpectedToken
    if not expr or not expr.strip():
        raise QueryError("empty expression", expr, 0)
    try:
        return _get_parser().parse(expr)
    except UnexpectedEOF as e:
        raise QueryError("the expression ends too early (missing value or ')'?)", expr,
                         len(expr.rstrip())) from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            raise QueryError("the expression ends too early (missing value or ')'?)", expr,
                             len(expr.rstrip())) from None
        raise QueryError(f"unexpected {str(tok)!r}", expr, tok.start_pos) from None
    except UnexpectedCharacters as e:
        raise QueryError(f"unexpected character {expr[e.pos_in_stream]!r}", expr,
                         e.pos_in_stream) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark errors
        raise QueryError(str(e).splitlines()[0], expr, getattr(e, "pos_in_stream", 0)) from None


@dataclass(eq=False)
class ExpressionFilter:
    """A :class:`~amore_gui.application.table_data.RowView` filter from an expression (the GUI's
    filter box). Compiled lazily against the table, again when its columns change.

    ``strict=False`` (the filter box): an expression that does not fit the table (unknown
    column, wrong units) filters nothing and :attr:`error` says why, so typing never breaks
    the view; ``strict=True`` raises :class:`QueryError` from :meth:`mask`."""

    expr: str
    strict: bool = True

    def __post_init__(self):
        self._query: Query | None = None
        self._ncols = -1
        #: the :class:`QueryError` of the last compilation (non-strict filters), or None
        self.error: QueryError | None = None

    def query(self, data: TableData) -> Query | None:
        if self._ncols != len(data.columns):
            self._ncols = len(data.columns)
            try:
                self._query, self.error = Query(self.expr, data), None
            except QueryError as e:
                if self.strict:
                    self._ncols = -1
                    raise
                self._query, self.error = None, e
        return self._query

    def mask(self, data: TableData) -> np.ndarray:
        q = self.query(data)
        return np.ones(data.nrows, bool) if q is None else q.mask(data)

    def accepts(self, data: TableData, row: int) -> bool:
        q = self.query(data)
        return True if q is None else q.accepts(data, row)

    def columns(self) -> set[str] | None:
        return None if self._query is None else set(self._query.column_keys)

    def describe(self, data: TableData) -> str:
        return self.expr


_EXPR_HINT = re.compile(r"==|!=|<|>|~|\(|\.\.|\b(and|or|not|in|has|failed)\b", re.I)


def looks_like_expression(text: str) -> bool:
    """True if the filter box text is meant as an expression (it has comparison operators,
    ``~``, parentheses, ranges or the words and/or/not/in/has/failed); plain words are a
    text search."""
    return bool(_EXPR_HINT.search(text or ""))


def search_filter(text: str):
    """The filter for the GUI's filter box: an :class:`ExpressionFilter` (non-strict) for
    expressions, else a case-insensitive text search
    (:class:`~amore_gui.application.table_data.TextContains`). Raises :class:`QueryError` for
    an expression with a syntax error."""
    from amore_gui.application.table_data import TextContains
    text = text.strip()
    if looks_like_expression(text):
        parse(text)
        return ExpressionFilter(text, strict=False)
    return TextContains(None, text)


def filter_rows(data: TableData, expr: str) -> np.ndarray:
    """Data rows (ascending) of ``data`` matching ``expr``. Raises :class:`QueryError`."""
    return np.flatnonzero(Query(expr, data).mask(data))
