"""The candidate's side of the trust boundary; runs in the sandbox as main.py (stdlib only).

It loads solution.py, then answers call requests read from fd 0, each a 4-byte length and
a marshal of {"id": 3, "fn": "add", "args": <wire>, "kwargs": <wire>} (only the verifier and
the tests' process write requests), with one JSON line each on fd 3:
    {"id": 3, "value": <wire>} | {"id": 3, "raised": {...}} | {"id": 3, "unserialisable": {...}}
after a first {"loaded": true} (or {"load_error": {...}}) and before a last {"done": true}.
What it saw of the program reaching for the harness goes out as {"tamper": "..."} lines.

Nothing here is trusted: no expected value, test or secret is in this process, and the
verifier compares what comes out of fd 3 in its own process. A program that rewrites this
harness can only make its own answers wrong or unreadable. The checks below exist to
*report* tampering, not to prevent it.
"""
import builtins
import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I left it out
import wire  # noqa: E402

sys.path.pop(0)

_write, _read, _type, _repr, _str, _len = os.write, os.read, type, repr, str, len
_BaseException, _exit = BaseException, os._exit
try:  # the C string quoter: importing json would cost more than the rest of the harness
    from _json import encode_basestring_ascii as _quote
except ImportError:
    from json.encoder import encode_basestring_ascii as _quote
HERE = __file__
WATCH = {"sys._current_frames": "read every thread's frame", "gc.get_objects": "walked the heap (gc.get_objects)",
         "gc.get_referrers": "walked the heap (gc.get_referrers)",
         "gc.get_referents": "walked the heap (gc.get_referents)",
         "sys.settrace": "installed a trace function", "sys.setprofile": "installed a profile function",
         "ctypes.dlopen": "loaded native code (ctypes)", "sys.addaudithook": "added an audit hook"}

out_fd = in_fd = -1     # set by main()
_seen = set()
_busy = [False]


def _dump(v):
    """JSON text of a record (dicts with str keys, lists, str, int, bool, None)."""
    t = _type(v)
    if t is str:
        return _quote(v)
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if t is int:
        return int.__repr__(v)
    if t is list:
        return "[" + ",".join([_dump(x) for x in v]) + "]"
    if t is dict:
        return "{" + ",".join([_quote(k) + ":" + _dump(x) for k, x in v.items()]) + "}"
    raise TypeError(f"cannot write {t.__name__}")


def probe(path):
    """Does opening `path` look like reaching for the harness, the tests or other processes?"""
    name = path.rsplit("/", 1)[-1]
    if path.startswith("/proc/") and any(k in path for k in ("/mem", "/fd/", "/task/", "/environ", "/maps")):
        return True
    return ("test" in name or "check" in name) and name.endswith((".py", ".json", ".jsonl"))


def send(obj):
    data = (_dump(obj) + "\n").encode()
    while data:
        data = data[_write(out_fd, data):]


def tamper(what):
    if what not in _seen and _len(_seen) < 20:
        _seen.add(what)
        send({"tamper": what[:200]})


def _hook(event, args):
    if _busy[0]:
        return
    _busy[0] = True
    try:
        if event in WATCH:
            tamper(WATCH[event])
        elif event == "sys._getframe" and args and getattr(getattr(args[0], "f_code", None), "co_filename", "") == HERE:
            tamper("took a frame of the harness (sys._getframe)")
        elif event == "open" and args and _type(args[0]) is str and probe(args[0]):
            tamper(f"opened {args[0][:80]}")
    finally:
        _busy[0] = False


def error_info(e):
    try:  # imported only when needed; a program may have broken importing altogether
        import traceback
    except _BaseException:  # noqa: BLE001
        traceback = None

    def safe(f):
        try:
            s = f()
            return s if _type(s) is str else "?"
        except _BaseException:  # noqa: BLE001 - a lying __str__ may raise anything
            return "?"

    frames = safe(lambda: "\n".join(f.line or "" for f in traceback.extract_tb(e.__traceback__)
                                    if f.filename == "solution.py"))
    info = {"exception": safe(lambda: _type(e).__name__)[:80], "message": safe(lambda: _str(e))[:500],
            "line": (frames.splitlines() or [None])[-1] or None, "is_exception": isinstance(e, Exception)}
    if isinstance(e, SyntaxError):
        info["line"] = safe(lambda: (e.text or "").strip()) or None
    return info


def requests():
    buf = b""
    while True:
        while _len(buf) < 4 or _len(buf) < 4 + int.from_bytes(buf[:4], "big"):
            chunk = _read(in_fd, 65536)
            if not chunk:
                return
            buf += chunk
        n = int.from_bytes(buf[:4], "big")
        yield buf[4:4 + n]
        buf = buf[4 + n:]


def with_changed_args(rec, req, args, kwargs):
    """`rec` plus, for the tests' process (its requests say "back"), the arguments after the call
    when the program changed them: it copies the change into the tests' own objects, as one
    process would have seen it (a test may check that an argument was, or was not, changed)."""
    if req.get("back") is not True:
        return rec
    try:
        after = [wire.encode(args), wire.encode(kwargs)]
    except _BaseException as e:  # noqa: BLE001 - e.g. the program put a generator into a list argument
        kind = e.kind if _type(e) is wire.Unserialisable else _type(e).__name__
        return {"id": rec["id"], "unserialisable": {"kind": f"an argument it changed holds {kind}"[:200],
                                                    "suspicious": bool(getattr(e, "suspicious", False))}}
    if after != [req["args"], req["kwargs"]]:
        rec["args"] = after
    return rec


def main():
    global out_fd, in_fd
    out_fd, in_fd = os.dup(3), os.dup(0)  # private copies: fds 0 and 3 are closed for the program
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(3)
    sys.stdin = open(os.devnull)
    with open("solution.py", encoding="utf-8") as f:
        source = f.read()
    before = dict(builtins.__dict__)
    sys.addaudithook(_hook)
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        if os.path.exists("helpers.py"):  # the prompt's own definitions (poly, ...), then the program's
            with open("helpers.py", encoding="utf-8") as f:
                exec(compile(f.read(), "helpers.py", "exec"), ns)
        exec(compile(source, "solution.py", "exec"), ns)
    except _BaseException as e:  # noqa: BLE001 - the program's failure, reported as such
        send({"load_error": error_info(e)})
        _exit(0)
    send({"loaded": True})
    for frame in requests():
        try:
            req = marshal.loads(frame)
            rid, fn = req["id"], req["fn"]
            args, kwargs = wire.decode(req["args"]), wire.decode(req["kwargs"])
        except _BaseException as e:  # noqa: BLE001
            send({"bad_request": _str(e)[:200]})
            continue
        target = ns.get(fn)
        if not callable(target):
            send({"id": rid, "raised": {"exception": "NameError", "line": None,
                                        "message": f"the program does not define {fn!r}"}})
            continue
        try:
            value = target(*args, **kwargs)
        except _BaseException as e:  # noqa: BLE001
            send(with_changed_args({"id": rid, "raised": error_info(e)}, req, args, kwargs))
            continue
        try:
            send(with_changed_args({"id": rid, "value": wire.encode(value)}, req, args, kwargs))
        except wire.Unserialisable as e:
            send({"id": rid, "unserialisable": {"kind": e.kind[:200], "suspicious": bool(e.suspicious)}})
        except _BaseException as e:  # noqa: BLE001 - e.g. RecursionError on a self-containing list
            send({"id": rid, "unserialisable": {"kind": f"unencodable ({_type(e).__name__})", "suspicious": False}})
    changed = sorted(k for k, v in before.items() if builtins.__dict__.get(k) is not v)[:5]
    if changed:
        tamper("replaced builtins: " + ", ".join(changed))
    send({"done": True})
    sys.stdout.flush()
    _exit(0)


if __name__ == "__main__":
    main()
