"""Translate assert-style tests into calls plus checks that run in trusted code.

Most code tests are `assert candidate(<args>) == <expected>` (HumanEval's `check`, MBPP's
assert lists). `translate` turns such a test into a `Plan`: the calls to make (function
name and argument *values*, computed here) and the test statements, which `Plan.check`
evaluates here, in the verifier's process, after the sandboxed program has answered the
calls. Only plain built-in values reach `check` (rebuilt by `verifiers.sandbox.wire`), and the
evaluator below knows a small whitelist of operations, so nothing the candidate wrote and
nothing unknown in the tests ever runs here.

A test with anything else (loops, helper functions, try/except, randomness, a call whose
argument is another call's result, an argument object reused after the call, which the
call could have mutated) raises `NotTranslatable`; the verifier then runs the tests in a
second sandbox that talks to the program only through the same channel.
"""
from __future__ import annotations

import ast
import builtins
import math
import operator
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from verifiers.sandbox import pyast, wire

MAX_SIZE = 1_000_000  # elements a sequence operation here may produce
MAX_HASHED = 10_000   # items of a set or dict built here (as verifiers.sandbox.wire allows)
# The bound on one sample's check (issue 20): the thread CPU the evaluation may use, and the
# elements its operations may visit in all (str(), ==, `in`, sorted(), method calls over the
# program's answers, each charged by the size of what it reads). Past either: EvalLimit, which
# the verifier charges to the program (fail, tamper). One operation runs to its end, and none
# may read more than MAX_UNITS elements: a check costs at most CHECK_CPU_S plus that one operation.
CHECK_CPU_S = 2.0
MAX_UNITS = 5_000_000  # also bounds what a check allocates: every new list, str, dict ... is charged by size
MAX_INT_BITS = 1 << 22  # a product, quotient or gcd of ints past this many bits is refused


class NotTranslatable(Exception):
    """The test needs the general path (a sandboxed test process)."""


class TestsError(ValueError):
    """The tests themselves are broken (e.g. a SyntaxError)."""


class EvalLimit(Exception):
    """An operation of the tests would build something too large to evaluate here."""


@dataclass
class Outcome:
    """What the sandboxed program answered for one call."""

    kind: str                    # value | raised | unserialisable | missing
    value: Any = None
    info: dict = field(default_factory=dict)


class CandidateFailed(Exception):
    def __init__(self, outcome: Outcome, call: Call):
        super().__init__(outcome.kind)
        self.outcome, self.call = outcome, call


@dataclass
class Call:
    fn: str
    args: tuple
    kwargs: dict
    text: str                    # the call as written in the tests


def _guard_mul(a, b):
    if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise EvalLimit("product of ints too large")
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_SIZE:
            raise EvalLimit("sequence repetition too large")
    return a * b


def _guard_pow(a, b):
    if isinstance(a, int) and isinstance(b, int) and abs(a) > 1 and abs(b) * a.bit_length() > 1 << 20:
        raise EvalLimit("power too large")
    return a ** b


def _int_division_cost(a, b):
    if isinstance(a, int) and isinstance(b, int):
        la, lb = abs(a).bit_length(), abs(b).bit_length()
        if ((la - lb) // 30 + 1) * (lb // 30 + 1) > 30_000_000:  # schoolbook division: quadratic
            raise EvalLimit("division of ints too large")


def _guard_div(op):
    def div(a, b):
        _int_division_cost(a, b)
        return op(a, b)
    div.__name__ = getattr(op, "__name__", "div")
    return div


FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _guard_mod(a, b):
    """`%` of ints as _guard_div; `fmt % args` refuses widths and precisions past MAX_SIZE
    (`"%0200000000d" % x` would allocate 200 MB here)."""
    if isinstance(a, (str, bytes)):
        fmt = a if isinstance(a, str) else a.decode("latin-1")
        for m in FORMAT_SPEC.finditer(fmt):
            for g in m.groups():
                if g and g != "*" and (len(g) > 7 or int(g) > MAX_SIZE):
                    raise EvalLimit("format width too large")
            if "*" in m.group(0):
                for x in (b if isinstance(b, tuple) else (b,)):
                    if isinstance(x, int) and abs(x) > MAX_SIZE:
                        raise EvalLimit("format width too large")
    else:
        _int_division_cost(a, b)
    return a % b


def _guard_gcd(*a):
    if any(isinstance(x, int) and x.bit_length() > MAX_INT_BITS for x in a):
        raise EvalLimit("gcd of ints too large")
    return math.gcd(*a)


def _guard_lshift(a, b):
    if isinstance(b, int) and b > 4096:
        raise EvalLimit("shift too large")
    return a << b


def _hashed(kind):
    """set/frozenset/dict over at most wire.MAX_HASHED items: crafted collisions make them quadratic."""
    def build(*a, **k):
        if a and not isinstance(a[0], (str, bytes)):  # a range may be the program's: range(M, 3000 * M, M)
            items = list(a[0].items() if isinstance(a[0], dict) else a[0])
            if len(items) > MAX_HASHED:
                raise EvalLimit(f"{kind.__name__}() of more than {MAX_HASHED} items")
            _spread([p[0] for p in items if type(p) in (tuple, list) and len(p) == 2] if kind is dict else items)
            a = (items, *a[1:])
        return kind(*a, **k)
    build.__name__ = kind.__name__
    return build


def _spread(keys):
    """wire.spread as an EvalLimit: keys the program crafted to share one hash."""
    try:
        return wire.spread(keys)
    except wire.WireError as e:
        raise EvalLimit(str(e)) from None


def _guard_range(*a):
    r = range(*a)
    if len(r) > MAX_SIZE:
        raise EvalLimit("range too large")
    return r


BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _guard_mul, ast.Div: _guard_div(operator.truediv),
          ast.FloorDiv: _guard_div(operator.floordiv), ast.Mod: _guard_mod, ast.Pow: _guard_pow,
          ast.BitAnd: operator.and_,
          ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.LShift: _guard_lshift, ast.RShift: operator.rshift}
UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
FUNCS = {name: getattr(builtins, name) for name in (
    "abs", "all", "any", "bool", "chr", "dict", "divmod", "enumerate", "float", "frozenset", "int", "isinstance",
    "len", "list", "max", "min", "ord", "repr", "reversed", "round", "set", "sorted", "str", "sum", "tuple",
    "type", "zip", "complex")}
FUNCS["range"] = _guard_range
FUNCS["divmod"] = _guard_div(divmod)


def _guard_round(x, *nd):
    if nd and isinstance(nd[0], int) and abs(nd[0]) > 10_000:  # round(5, -10**8) computes 10**(10**8)
        raise EvalLimit("round() to too many digits")
    return round(x, *nd)


FUNCS["round"] = _guard_round


def _guard_bytes(*a, **k):
    if a and isinstance(a[0], int) and a[0] > MAX_SIZE:
        raise EvalLimit("bytes() too large")
    return bytes(*a, **k)


# A class reached as a value (`type(f(1))(n)`) is called through the same guards as its name.
CONSTRUCTORS = {range: _guard_range, set: FUNCS["set"], frozenset: FUNCS["frozenset"], dict: FUNCS["dict"],
                bytes: _guard_bytes}
FUNCS.update(set=_hashed(set), frozenset=_hashed(frozenset), dict=_hashed(dict))
MATH = {name: getattr(math, name) for name in (
    "isclose", "fabs", "sqrt", "floor", "ceil", "pi", "e", "inf", "nan", "isnan", "isinf", "log", "log2", "log10",
    "exp", "gcd", "fsum", "trunc", "hypot", "sin", "cos", "tan", "atan", "radians", "degrees")}
MATH["gcd"] = _guard_gcd
METHODS = {"lower", "upper", "strip", "lstrip", "rstrip", "split", "join", "startswith", "endswith", "count",
           "index", "find", "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "keys", "values",
           "items", "get", "copy", "title", "capitalize", "swapcase", "splitlines"}
IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), range)  # a call cannot change these
SCALAR = (int, float, complex, bool, type(None))
PLAIN = (str, bytes, list, tuple, dict, set, frozenset, int, float, complex, bool, type(None), range)
STATIC_OK = (ast.Constant, ast.Name, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp,
             ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Subscript, ast.Slice, ast.Attribute, ast.keyword,
             ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp, ast.comprehension,
             ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.expr_context)


class _Math:
    """Stands for an imported `math` module inside the evaluator."""


class Budget:
    """What one check may spend: thread CPU (CHECK_CPU_S) and element visits (MAX_UNITS)."""

    def __init__(self):
        self.deadline = time.thread_time() + CHECK_CPU_S
        self.units = self.steps = 0
        self.weights: dict[int, tuple[Any, int]] = {}  # id -> (the value, kept alive; its weight)

    def tick(self) -> None:
        self.steps += 1
        if not self.steps & 15 and time.thread_time() > self.deadline:
            raise EvalLimit(f"the check used more than {CHECK_CPU_S:g} s of the verifier's CPU")

    def charge(self, *values) -> None:
        for v in values:
            self.units += self.weight(v)
        if self.units > MAX_UNITS:
            raise EvalLimit(f"the check would visit more than {MAX_UNITS:,} elements")

    def made(self, out):
        """Charge a value the check just built by its size (memory); returns it."""
        t = type(out)
        if t is list or t is tuple or t is dict or t is set or t is frozenset:
            self.units += len(out)
        elif t is str or t is bytes:
            self.units += len(out) // 8
        if self.units > MAX_UNITS:
            raise EvalLimit(f"the check would build or visit more than {MAX_UNITS:,} elements")
        return out

    def weight(self, v) -> int:
        """Elements str(), ==, `in` or sorted() visit in `v`, shared items each time (to MAX_UNITS)."""
        if type(v) in SCALAR:
            return 1 if type(v) is not int else 1 + v.bit_length() // 1024
        hit = self.weights.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        total, stack = 0, [v]
        while stack and total <= MAX_UNITS:
            x = stack.pop()
            t = type(x)
            if t is str or t is bytes:
                total += 1 + len(x) // 8
            elif t is list or t is tuple or t is set or t is frozenset:
                total += 1 + len(x)
                stack.extend(y for y in x if type(y) not in SCALAR or type(y) is int and y.bit_length() > 1024)
            elif t is dict:
                total += 1 + 2 * len(x)
                stack.extend(x.keys())
                stack.extend(x.values())
            elif t is int:
                total += x.bit_length() // 1024
            else:
                total += 1
        self.weights[id(v)] = (v, total)
        return total


class Evaluator:
    """Evaluates whitelisted expressions over plain values; candidate calls come from `results`."""

    def __init__(self, candidate_names: set[str], results: dict[int, Outcome] | None, calls: dict[int, Call]):
        self.candidate_names, self.results, self.calls = candidate_names, results, calls
        self.budget = Budget()

    def eval(self, node: ast.AST, env: dict) -> Any:
        m = getattr(self, f"_{type(node).__name__}", None)
        if m is None:
            raise NotTranslatable(f"{type(node).__name__} in a test expression")
        self.budget.tick()
        return m(node, env)

    def _Constant(self, n, env):
        return n.value

    def _Name(self, n, env):
        if n.id in env:
            v = env[n.id]
            if v is _IMPORTED or v is _PENDING:
                raise NotTranslatable(f"{n.id} is not available here")
            return v
        if n.id in FUNCS:
            return FUNCS[n.id]
        raise NotTranslatable(f"unknown name {n.id}")

    def _List(self, n, env):
        return [self.eval(e, env) for e in n.elts]

    def _Tuple(self, n, env):
        return tuple(self.eval(e, env) for e in n.elts)

    def _Set(self, n, env):
        return {self.eval(e, env) for e in n.elts}

    def _Dict(self, n, env):
        if any(k is None for k in n.keys):
            raise NotTranslatable("** in a dict display")
        return {self.eval(k, env): self.eval(v, env) for k, v in zip(n.keys, n.values)}

    def _BinOp(self, n, env):
        left, right = self.eval(n.left, env), self.eval(n.right, env)
        self.budget.charge(left, right)
        return self.budget.made(BINOPS[type(n.op)](left, right))

    def _UnaryOp(self, n, env):
        return UNARY[type(n.op)](self.eval(n.operand, env))

    def _BoolOp(self, n, env):
        v = None
        for e in n.values:
            v = self.eval(e, env)
            if isinstance(n.op, ast.And) and not v or isinstance(n.op, ast.Or) and v:
                return v
        return v

    def _Compare(self, n, env):
        left = self.eval(n.left, env)
        for op, right_node in zip(n.ops, n.comparators):
            right = self.eval(right_node, env)
            if isinstance(op, (ast.In, ast.NotIn)):
                self.budget.charge(right)
            elif not isinstance(op, (ast.Is, ast.IsNot)):
                self.budget.units += min(self.budget.weight(left), self.budget.weight(right))
                self.budget.charge()
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, n, env):
        return self.eval(n.body, env) if self.eval(n.test, env) else self.eval(n.orelse, env)

    def _Subscript(self, n, env):
        out = self.eval(n.value, env)[self.eval(n.slice, env)]
        if isinstance(n.slice, ast.Slice) and hasattr(out, "__len__"):
            self.budget.units += len(out)  # a slice copies
            self.budget.charge()
        return out

    def _Slice(self, n, env):
        return slice(*(self.eval(x, env) if x is not None else None for x in (n.lower, n.upper, n.step)))

    def _Attribute(self, n, env):
        obj = self.eval(n.value, env)
        if isinstance(obj, _Math):
            if n.attr in MATH:
                return MATH[n.attr]
        elif type(obj) in PLAIN and n.attr in METHODS:
            return getattr(obj, n.attr)  # AttributeError (the test fails) where the type has none
        raise NotTranslatable(f"attribute .{n.attr} of {type(obj).__name__}")

    def _Call(self, n, env):
        if isinstance(n.func, ast.Name) and n.func.id in self.candidate_names and n.func.id not in env:
            if self.results is None:
                raise NotTranslatable("a call of the program inside an argument or a comprehension")
            out = self.results.get(id(n), Outcome("missing"))
            if out.kind != "value":
                raise CandidateFailed(out, self.calls[id(n)])
            return out.value
        if any(isinstance(a, ast.Starred) for a in n.args) or any(k.arg is None for k in n.keywords):
            raise NotTranslatable("* or ** arguments")
        if isinstance(n.func, ast.Name) and n.func.id == "print" and "print" not in env:
            args = [self.eval(a, env) for a in n.args]
            kwargs = {k.arg: self.eval(k.value, env) for k in n.keywords}
            if set(kwargs) - {"sep", "end", "flush"}:
                raise NotTranslatable("print() to a file")
            self.budget.charge(*args)
            for a in args:  # what print() would do with them (a huge int raises ValueError)
                str(a)
            return None
        f = self.eval(n.func, env)
        if isinstance(f, type):
            f = CONSTRUCTORS.get(f, f)
        args = [self.eval(a, env) for a in n.args]
        kwargs = {k.arg: self.eval(k.value, env) for k in n.keywords}
        self.budget.charge(getattr(f, "__self__", None), *args, *kwargs.values())
        return self.budget.made(f(*args, **kwargs))

    def _comp(self, gens, env, emit):
        if not gens:
            emit(env)
            return
        g = gens[0]
        if g.is_async:
            raise NotTranslatable("async comprehension")
        for item in self.eval(g.iter, env):
            self.budget.tick()
            self.budget.units += 1 + len(env)  # the item and its scope (a dict of env's size)
            inner = dict(env)
            self._bind(g.target, item, inner)
            if all(self.eval(c, inner) for c in g.ifs):
                self._comp(gens[1:], inner, emit)

    def _bind(self, target, value, env):
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                raise ValueError(f"cannot unpack {len(values)} values into {len(target.elts)}")
            for t, v in zip(target.elts, values):
                self._bind(t, v, env)
        else:
            raise NotTranslatable("comprehension target")

    def _collect(self, n, env, elt):
        out = []
        self._comp(n.generators, env, lambda e: out.append(self.eval(elt, e)) or _limit(out))
        return out

    def _ListComp(self, n, env):
        return self._collect(n, env, n.elt)

    def _GeneratorExp(self, n, env):
        return iter(self._collect(n, env, n.elt))

    def _SetComp(self, n, env):
        return set(_spread(self._collect(n, env, n.elt)))

    def _DictComp(self, n, env):
        pairs = self._collect(n, env, ast.Tuple(elts=[n.key, n.value], ctx=ast.Load()))
        _spread([k for k, _ in pairs])
        return dict(pairs)


def _limit(out):
    if len(out) > MAX_SIZE:
        raise EvalLimit("comprehension too large")


_IMPORTED = object()   # a module other than math: the evaluator does not know it
_PENDING = object()    # bound from the program's answer: known only when checking


@dataclass
class Failure:
    """The first test statement that did not hold."""

    test_line: str
    exception: str
    message: str
    outcome: Outcome | None = None   # set when the program's answer itself was the problem
    call: Call | None = None


@dataclass
class Plan:
    """Calls to send to the program, and the statements that judge the answers."""

    calls: list[Call]
    statements: list[ast.stmt]
    call_ids: list[int]              # id(ast.Call) of each call, in order
    candidate_names: set[str]
    source: str
    nodes: list[ast.AST] = field(default_factory=list)  # keeps the nodes (and their ids) alive
    modules: set[str] = field(default_factory=set)  # stdlib modules the tests use unimported

    def check(self, outcomes: list[Outcome]) -> Failure | None:
        """Evaluate the tests over the program's answers; the first failure, or None."""
        results = dict(zip(self.call_ids, outcomes))
        ev = Evaluator(self.candidate_names, results, dict(zip(self.call_ids, self.calls)))
        env: dict = {m: _Math() if m == "math" else _IMPORTED for m in self.modules}
        for st in self.statements:
            line = _first_line(self.source, st)
            try:
                if not _run_statement(ev, st, env):
                    msg = st.msg.value if isinstance(st, ast.Assert) and isinstance(st.msg, ast.Constant) else ""
                    return Failure(line, "AssertionError", str(msg))
            except CandidateFailed as e:
                return Failure(line, e.outcome.info.get("exception", e.outcome.kind),
                               e.outcome.info.get("message", ""), e.outcome, e.call)
            except EvalLimit as e:
                return Failure(line, "EvalLimit", f"the test's own computation is too large to check: {e}")
            except NotTranslatable:
                raise
            except Exception as e:  # noqa: BLE001 - e.g. TypeError comparing None < 1: the test fails
                return Failure(line, type(e).__name__, str(e)[:500])
        return None


def _first_line(source: str, node: ast.AST) -> str:
    seg = ast.get_source_segment(source, node) or ""
    return seg.strip().splitlines()[0] if seg.strip() else ""


def _run_statement(ev: Evaluator, st: ast.stmt, env: dict) -> bool:
    """Execute one supported statement; False when an assert does not hold."""
    if isinstance(st, ast.Assert):
        return bool(ev.eval(st.test, env))
    if isinstance(st, ast.Assign):
        env[st.targets[0].id] = ev.eval(st.value, env)
    elif isinstance(st, ast.Expr):
        ev.eval(st.value, env)
    elif isinstance(st, (ast.Import, ast.ImportFrom)):
        for a in st.names:
            env[(a.asname or a.name).split(".")[0]] = _Math() if a.name == "math" and isinstance(st, ast.Import) \
                else _IMPORTED
    return True


def free_names(tree: ast.AST) -> set[str]:
    """Names read but never bound anywhere in the tests, and not built-ins."""
    loads, bound = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
    return {x for x in loads - bound if not hasattr(builtins, x)} - implicit_modules(tree)


def implicit_modules(tree: ast.AST) -> set[str]:
    """Standard-library modules the tests use without importing them (MBPP's tests lean on
    the solution's `import math`): names of stdlib modules that are never bound and only
    ever appear as `name.attribute`. Both paths import them on the tests' side."""
    attr_bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used, other, bound = set(), set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            (used if id(n) in attr_bases else other).add(n.id)
        elif isinstance(n, ast.Name) or isinstance(n, ast.arg):
            bound.add(n.id if isinstance(n, ast.Name) else n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
    return {x for x in used - other - bound if x in sys.stdlib_module_names}


def parse_tests(tests: str) -> ast.Module:
    try:
        return pyast.parse(tests, "tests.py")
    except SyntaxError as e:
        raise TestsError(f"the tests do not parse: {e.msg} (line {e.lineno}: {(e.text or '').strip()[:80]})") from None


def body_of(tree: ast.Module, entry_point: str | None) -> tuple[list[ast.stmt], dict[str, str]]:
    """The statements to run and {name in the tests: the program's function name}."""
    check = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if entry_point is None:
        if check:
            raise TestsError("the tests define check(candidate) but the problem has no entry_point; "
                             "set entry_point to the function under test")
        return tree.body, {n: n for n in free_names(tree)}
    if not check:
        return tree.body, {n: n for n in free_names(tree)} | {entry_point: entry_point}
    fn = check[-1]
    if len(fn.args.args) != 1 or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs:
        raise NotTranslatable("check() must take exactly one argument")
    names = {n: n for n in free_names(tree)}
    names[fn.args.args[0].arg] = entry_point
    others = [s for s in tree.body if s is not fn]
    return [*others, *fn.body], names


def translate(tests: str, entry_point: str | None, helpers: frozenset[str] = frozenset()) -> Plan:
    """A Plan for `tests`; NotTranslatable when it needs the general path, TestsError if broken.
    `helpers`: functions the problem's prompt defines; tests that call them need the test process,
    where they run from the prompt (never the program's definitions of the same names)."""
    tree = parse_tests(tests)
    statements, names = body_of(tree, entry_point)
    used = sorted(set(names) & helpers - {entry_point})
    if used:
        raise NotTranslatable(f"the tests call {used[0]}(), which the prompt defines")
    ev = Evaluator(set(names), None, {})
    env: dict = {m: _Math() if m == "math" else _IMPORTED for m in implicit_modules(tree)}
    calls, call_ids, kept = [], [], []
    passed: dict[int, Any] = {}  # mutable objects reachable from arguments sent so far (id -> object)
    for st in statements:
        if isinstance(st, ast.FunctionDef) and st.name == "check":
            continue
        if isinstance(st, ast.Expr) and (isinstance(st.value, ast.Constant) or (
                isinstance(st.value, ast.Name) and hasattr(builtins, st.value.id))):
            continue  # docstrings, comments-as-strings, a bare `print`: nothing that can raise
        if isinstance(st, ast.Pass):
            continue
        if isinstance(st, ast.Assign) and not (len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)):
            raise NotTranslatable("assignment to something other than one name")
        if not isinstance(st, (ast.Assert, ast.Assign, ast.Expr, ast.Import, ast.ImportFrom)):
            raise NotTranslatable(f"{type(st).__name__} statement")
        exprs = [st.test] if isinstance(st, ast.Assert) else [st.value] if not isinstance(
            st, (ast.Import, ast.ImportFrom)) else []
        sent: list[tuple[ast.Call, dict[int, Any]]] = []
        for e in exprs:
            for node in ast.walk(e):
                if not isinstance(node, STATIC_OK):
                    raise NotTranslatable(f"{type(node).__name__} in a test expression")
                if isinstance(node, ast.Name) and node.id in names and not _is_call_target(node, e):
                    raise NotTranslatable(f"{node.id} is used other than by calling it")
                if isinstance(node, ast.Attribute) and node.attr not in METHODS and node.attr not in MATH:
                    raise NotTranslatable(f"attribute .{node.attr}")
            scoped = _in_comprehension_scope(e)
            for call in _candidate_calls(e, names):
                if id(call) in scoped:  # asked once here, but Python would call it per item with other names
                    raise NotTranslatable("a call of the program inside a comprehension")
                if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                    raise NotTranslatable("* or ** arguments")
                try:  # NotTranslatable for nested calls or names known only later
                    args = [ev.eval(a, env) for a in call.args]
                    kwargs = {k.arg: ev.eval(k.value, env) for k in call.keywords}
                except NotTranslatable:
                    raise
                except Exception as e:  # noqa: BLE001
                    raise NotTranslatable(f"evaluating arguments: {type(e).__name__}") from None
                reach: dict[int, Any] = {}
                for v in [*args, *kwargs.values()]:
                    _mutables(v, reach)
                sent.append((call, reach))
                calls.append(Call(names[call.func.id], tuple(args), kwargs, ast.get_source_segment(tests, call) or ""))
                call_ids.append(id(call))
        _check_reads(exprs, env, passed, sent)
        for _, reach in sent:
            passed.update(reach)
        if isinstance(st, ast.Assign) and _candidate_calls(st.value, names):
            env[st.targets[0].id] = _PENDING
        elif isinstance(st, (ast.Assign, ast.Import, ast.ImportFrom)):
            try:  # bind what later arguments may use
                _run_statement(ev, st, env)
            except NotTranslatable:
                raise
            except Exception as e:  # noqa: BLE001 - the general path will report it as the test's failure
                raise NotTranslatable(f"evaluating {type(st).__name__}: {type(e).__name__}") from None
        kept.append(st)
    if not calls:
        raise NotTranslatable("the tests never call the program")
    return Plan(calls, kept, call_ids, set(names), tests, nodes=[tree], modules=implicit_modules(tree))


def _mutables(v, out: dict[int, Any]) -> dict[int, Any]:
    """The lists, dicts and sets reachable from `v` (which a call of the program could change)."""
    stack = [v]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is list or t is dict or t is set:
            if id(x) in out:
                continue
            out[id(x)] = x
        if t is list or t is tuple or t is set or t is frozenset:
            stack.extend(x)
        elif t is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
    return out


def _check_reads(exprs: list[ast.AST], env: dict, passed: dict[int, Any],
                 sent: list[tuple[ast.Call, dict[int, Any]]]) -> None:
    """One process would let a call change its arguments before the rest of the test reads them:
    `candidate(xs) == sorted(xs)`, `orig = data` then `candidate(data)`, `f(a) == f(a)`. Such a read
    (by any name, an alias too) goes to the test process, which decides what one process would."""
    for e in exprs:
        inside = {id(n): call for call, _ in sent for a in [*call.args, *(k.value for k in call.keywords)]
                  for n in ast.walk(a)}
        for node in ast.walk(e):
            if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in env):
                continue
            value = env[node.id]
            if value is _PENDING or value is _IMPORTED or isinstance(value, (*IMMUTABLE, _Math)):
                continue
            mine = _mutables(value, {})
            if mine.keys() & passed.keys():
                raise NotTranslatable(f"{node.id} may have been changed by an earlier call of the program")
            hits = [call for call, reach in sent if mine.keys() & reach.keys()]
            if hits and (len(hits) > 1 or inside.get(id(node)) is not hits[0]):
                raise NotTranslatable(f"{node.id} is passed to the program and read again in the same statement")


def _in_comprehension_scope(e: ast.AST) -> set[int]:
    """ids of the calls evaluated in a comprehension's own scope (all but its first iterable)."""
    out = set()
    for n in ast.walk(e):
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = [n.key, n.value] if isinstance(n, ast.DictComp) else [n.elt]
            inner += [n.generators[0].target, *n.generators[0].ifs]
            inner += [x for g in n.generators[1:] for x in (g.target, g.iter, *g.ifs)]
            out.update(id(c) for part in inner for c in ast.walk(part) if isinstance(c, ast.Call))
    return out


def _is_call_target(name: ast.Name, root: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(root))


def _candidate_calls(e: ast.AST, names: dict[str, str]) -> list[ast.Call]:
    """Calls of the program's functions in `e`, in evaluation order (depth first, left to right)."""
    out: list[ast.Call] = []

    def visit(n):
        for child in ast.iter_child_nodes(n):
            visit(child)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            out.append(n)

    visit(e)
    return out
