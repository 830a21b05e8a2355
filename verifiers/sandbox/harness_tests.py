"""The tests' side of the trust boundary, for tests that cannot be translated; runs in its
own sandbox as main.py (stdlib only), next to tests.py and config.json.

The program under test runs in another sandbox (verifiers/sandbox/harness_candidate.py). Here the
tests call it through proxies: a call goes out on fd 5 as a marshalled request, its answer comes
back on fd 4 and is rebuilt by `wire.decode` into plain built-ins, so every comparison the
tests make is between values this process built. The verdict goes to the verifier on fd 3,
which only this process holds. No object of the program ever exists here.
"""
import ast
import builtins
import json
import marshal
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I left it out
import wire  # noqa: E402

sys.path.pop(0)

VERDICT, ANSWERS, REQUESTS = 3, 4, 5
MAX_ANSWER = 4 << 20  # bytes of one answer, as the verifier caps its own channel
# Not re-raised as themselves: they would end the tests (exits) or the tests' own loops
# (StopIteration out of map(candidate, ...) ends all(), zip, for: a program raising it "passed").
NOT_RERAISED = (SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration, StopAsyncIteration)
tamper = []


class ProgramError(Exception):
    """The program raised an exception that is not a built-in one."""


class ProgramBaseError(BaseException):
    """The program raised a BaseException that is no Exception (SystemExit, its own class): a
    test's `except Exception` would not have caught it in one process, so it does not here."""


fatal = []  # ProgramResultError/ProtocolError raised, even where the tests swallowed them


class _Fatal(BaseException):
    """Not an Exception: a test's `except Exception` (written for the program raising) must not
    take a refused answer for one; a bare `except:` still could, so main() checks `fatal` too."""

    def __init__(self, *args):
        super().__init__(*args)
        fatal.append(self)


class ProgramResultError(_Fatal):
    """The program answered with a value that may not cross the boundary."""


class ProtocolError(_Fatal):
    """The program's channel carried something the harness there did not write."""


class ArgumentChanged(_Fatal):
    """The program changed an argument that the tests still hold, in a call whose result the tests
    use: in one process the rest of the expression may read the changed object (`candidate(xs) ==
    sorted(xs)` after the program emptied xs) and may not. Undecidable here, so it fails."""


# ------------------------------------------------------------ no value of the program runs as code here
# The verdict is written by this process, so nothing the program answered may execute in it: a test
# doing eval(candidate(2)) would run the program's string with the verdict channel at hand. After the
# tests are compiled, code may only run from tests.py, helpers.py and the standard library; a compile
# of anything but the tests' own string constants (or ast.parse's, which makes an AST only, as
# ast.literal_eval does) ends the run as tamper before the code exists.
STDLIB = os.path.dirname(os.__file__) + "/"
# Standard-library code generators whose source is built from checked identifiers (namedtuple's
# __new__, a dataclass's __init__): tests may define these while they run.
CODEGEN = (STDLIB + "collections/__init__.py", STDLIB + "dataclasses.py", STDLIB + "ast.py")
# Ways to run code without compiling it here (logging.config's "()" factories reach os.system).
SPAWN = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "ctypes.dlopen",
         "ctypes.dlsym", "ctypes.call_function"}
running = [False]
constants = set()


def _audit(event, args):
    if not running[0]:
        return
    if event == "compile":
        source, filename = args[0], args[1]
        if type(filename) is str and filename.startswith(STDLIB):
            return  # an import compiling a stdlib module's source
        if sys._getframe(1).f_code.co_filename in CODEGEN:
            return  # namedtuple, dataclass, or ast.parse (an AST only: ast.literal_eval)
        if type(source) in (str, bytes) and (source in constants or
                                             type(source) is bytes and source.decode("utf-8", "replace") in constants):
            return
        _stop("the tests compiled a value made at run time (it may come from the program)")
    elif event == "exec":
        filename = getattr(args[0], "co_filename", None)
        if type(filename) is str and (filename in ("tests.py", "helpers.py", "<string>")
                                      or filename.startswith((STDLIB, "<frozen "))):
            return
        _stop(f"the tests executed code made at run time ({str(filename)[:60]}): eval/exec of a value the "
              "program may have made")
    elif event in SPAWN:
        _stop(f"the tests started a program or loaded native code ({event}) at run time")
    elif event == "pickle.find_class" or event == "marshal.loads" and not \
            sys._getframe(1).f_code.co_filename.startswith("<frozen importlib"):
        _stop(f"the tests unpickled or unmarshalled data ({event}) at run time")


def _stop(what):
    running[0] = False
    note_tamper(what)
    os._exit(0)


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(VERDICT, data):]


def note_tamper(what):
    """Passed on at once: the run may end in a timeout before any verdict."""
    tamper.append(what)
    _send({"tamper": what})


def send_verdict(obj):
    _send(obj)
    os._exit(0)


def _lines(fd):
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > MAX_ANSWER:
                raise ProgramResultError(f"the program answered with more than {MAX_ANSWER >> 20} MiB")
        line, buf = buf.split(b"\n", 1)
        yield line


answers = iter(())  # the program's records; set by main()


def record():
    """The next record from the program; tamper reports are collected on the way."""
    for line in answers:
        try:
            rec = json.loads(line, parse_constant=wire._no_constant)
        except (ValueError, RecursionError):
            raise ProtocolError("a line that is not JSON") from None
        if type(rec) is not dict:
            raise ProtocolError("a record that is not an object")
        if "tamper" in rec:
            note_tamper(str(rec["tamper"])[:200])
            continue
        return rec
    return None


_ids = iter(range(1 << 62))


def call(fn, args, kwargs):
    rid = next(_ids)
    try:
        sent = [wire.encode(list(args)), wire.encode(dict(kwargs))]
        body = marshal.dumps({"id": rid, "fn": fn, "args": sent[0], "kwargs": sent[1], "back": True})
    except (wire.Unserialisable, ValueError) as e:
        raise TypeError(f"the tests pass {e} to {fn}(), which cannot cross the sandbox boundary") from None
    data = len(body).to_bytes(4, "big") + body
    while data:
        data = data[os.write(REQUESTS, data):]
    rec = record()
    if rec is None:
        raise ProgramError(f"the program stopped before answering {fn}()")
    if rec.get("id") != rid:
        raise ProtocolError(f"expected the answer to call {rid}, got {str(rec)[:80]}")
    if "args" in rec:  # the program changed its arguments: the tests' objects follow, or it fails
        try:
            new_args, new_kwargs = wire.decode(rec["args"])
        except (wire.WireError, ValueError, TypeError) as e:
            raise ProtocolError(f"changed arguments that are not wire values: {str(e)[:80]}") from None
        if type(new_args) is not list or len(new_args) != len(args) or type(new_kwargs) is not dict \
                or set(new_kwargs) != set(kwargs):
            raise ProtocolError("changed arguments that do not match the call")
        before = [*zip(args, sent[0]), *((kwargs[k], tree) for k, (_, tree) in zip(kwargs, sent[1]["d"]))]
        after = [*new_args, *(new_kwargs[k] for k in kwargs)]
        changed = [(old, new) for (old, tree), new in zip(before, after) if wire.encode(new) != tree]
        site = call_site() if changed else None
        if changed and (site is None or not site[0] and not site[1]):
            raise ArgumentChanged(f"{fn}() changed an argument the tests hold, and the test uses its result "
                                  "(whether the test reads the changed argument is undecidable)")
        if changed and site[0]:  # `f(xs)` alone: the in-place change is what the test will check
            for old, new in changed:  # only those changed: f(a, a) changing its first argument
                copy_back(old, new)
    if "value" in rec:
        try:
            return wire.decode(rec["value"])
        except wire.WireError as e:
            raise ProtocolError(f"an answer that is not a wire value: {e}") from None
    if "unserialisable" in rec:
        info = rec["unserialisable"] if type(rec["unserialisable"]) is dict else {}
        kind = str(info.get("kind", "?"))[:200]
        if info.get("suspicious"):
            note_tamper(f"{fn}() returned {kind}, an imitation of a built-in value")
        raise ProgramResultError(f"{fn}() returned {kind}: only plain built-in values are compared")
    if "raised" in rec:
        info = rec["raised"] if type(rec["raised"]) is dict else {}
        name, msg = str(info.get("exception", "Exception"))[:80], str(info.get("message", ""))[:500]
        cls = getattr(builtins, name, None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or issubclass(cls, NOT_RERAISED):
            cls = ProgramError if info.get("is_exception") is not False else ProgramBaseError
        err = cls(msg)
        err.program_info = info
        raise err
    raise ProtocolError(f"an unexpected record {str(rec)[:80]}")


def copy_back(old, new):
    """Make the tests' object `old` hold `new` (it after the program's call) in place; False where
    `old` cannot change in place (then a containing list or dict takes `new` instead)."""
    if type(old) is list and type(new) is list:
        if len(old) != len(new):
            old[:] = new
        for i in range(len(new)):
            if old[i] is not new[i] and not copy_back(old[i], new[i]):
                old[i] = new[i]
        return True
    if type(old) is dict and type(new) is dict:
        kept = {k: old[k] for k in new if k in old and copy_back(old[k], new[k])}
        old.clear()
        old.update({k: kept[k] if k in kept else v for k, v in new.items()})
        return True
    if type(old) is set and type(new) is set:
        old.clear()
        old.update(new)
        return True
    if type(old) is tuple and type(new) is tuple and len(old) == len(new):
        return all([copy_back(o, n) or o == n for o, n in zip(old, new)])
    return old == new if type(old) is type(new) else False


SITES = {}  # (line, end line, column, end column) of a call of the program -> (its value unused, literal args)


def _literal(node):
    """Nothing the tests hold can be reached through this argument: a literal, or a deep copy."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Call) and (isinstance(node.func, ast.Attribute) and node.func.attr == "deepcopy"
                                       or isinstance(node.func, ast.Name) and node.func.id == "deepcopy"):
        return True  # HumanEval/32: candidate(copy.deepcopy(coeffs))
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _literal(k) and _literal(v) for k, v in zip(node.keys, node.values))
    return False


def index_sites(tree, names):
    """Where the tests call the program: is the call a statement of its own (`f(xs)`), and are all its
    arguments literals (then nothing the tests hold can have changed)?"""
    alone = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            args = [*n.args, *(k.value for k in n.keywords)]
            SITES[(n.lineno, n.end_lineno, n.col_offset, n.end_col_offset)] = (
                id(n) in alone, all(_literal(a) for a in args))


def call_site():
    """SITES' entry for the tests' call being answered now; None where it is not a plain call in tests.py
    (map(candidate, ...), a helper calling it)."""
    f = sys._getframe(3)  # call_site <- call <- the proxy <- its caller
    if f.f_code.co_filename != "tests.py":
        return None
    try:
        pos = next(p for i, p in enumerate(f.f_code.co_positions()) if i == f.f_lasti // 2)
    except StopIteration:
        return None
    return SITES.get(pos)


def proxy(fn):
    def candidate(*args, **kwargs):
        return call(fn, args, kwargs)
    candidate.__name__ = fn
    return candidate


def failure(e):
    frames = traceback.extract_tb(e.__traceback__)
    test_lines = [f.line for f in frames if f.filename == "tests.py" and f.line]
    info = {"exception": type(e).__name__, "message": str(e)[:500],
            "test_line": test_lines[-1] if test_lines else None}
    program = getattr(e, "program_info", None)
    if isinstance(program, dict):
        info["line"] = program.get("line")
        info["raised_by"] = "program"
    return info


def main():
    global answers
    answers = _lines(ANSWERS)
    with open("config.json") as f:
        cfg = json.load(f)
    with open("tests.py", encoding="utf-8") as f:
        tests = f.read()
    try:
        first = record()
    except ProtocolError as e:
        send_verdict({"protocol": str(e)})
    except _Fatal as e:  # e.g. more than MAX_ANSWER bytes before "loaded": the program's doing
        send_verdict({"failed": failure(e)})
    if first is None:
        send_verdict({"program_error": {"exception": "exited", "message": "the program exited before the tests"}})
    if "load_error" in first:
        send_verdict({"program_error": first["load_error"] if type(first["load_error"]) is dict else {}})
    if first.get("loaded") is not True:
        send_verdict({"protocol": f"expected the program to report loading, got {str(first)[:80]}"})
    ns = {"__name__": "tests"}
    for name in cfg.get("modules", []):  # used by the tests without an import (MBPP leans on the solution's)
        try:
            ns[name] = __import__(name)
        except ImportError:
            pass
    code = compile(tests, "tests.py", "exec")
    tree = ast.parse(tests, "tests.py")
    constants.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (str, bytes))
    index_sites(tree, cfg["names"])
    helpers = None
    if os.path.exists("helpers.py"):  # the prompt's own functions (HumanEval's poly): never the program's
        with open("helpers.py", encoding="utf-8") as f:
            helpers = compile(f.read(), "helpers.py", "exec")
    sys.addaudithook(_audit)
    running[0] = True
    try:
        if helpers is not None:
            exec(helpers, ns)
    except BaseException as e:  # noqa: BLE001 - the problem's prompt is broken, not the program
        running[0] = False
        send_verdict({"helpers_error": failure(e)})
    for name, fn in cfg["names"].items():
        ns[name] = proxy(fn)
    try:
        exec(code, ns)
        if cfg["entry_point"] and "check" in ns:
            ns["check"](proxy(cfg["entry_point"]))
    except ProtocolError as e:
        send_verdict({"protocol": str(e)})
    except BaseException as e:  # noqa: BLE001 - the tests failed; say where
        send_verdict({"failed": failure(e)})
    for e in fatal[:1]:  # swallowed by the tests' own try/except
        send_verdict({"protocol": str(e)} if isinstance(e, ProtocolError) else {"failed": failure(e)})
    os.close(REQUESTS)  # the program sees EOF, reports what it saw, and says done
    try:
        last = record()
        extra = record() if last is not None else None
    except ProtocolError as e:
        send_verdict({"protocol": str(e)})
    if last is None:
        send_verdict({"program_error": {"exception": "exited", "message": "the program exited before finishing"}})
    if last != {"done": True} or extra is not None:
        send_verdict({"protocol": f"expected the program's last record to be done, got {str(last)[:80]}"})
    sys.stdout.flush()
    send_verdict({"passed": True})


if __name__ == "__main__":
    main()
