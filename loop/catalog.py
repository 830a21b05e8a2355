"""`launch.py list`: the registries themselves are the catalogue."""
from __future__ import annotations


def catalog(plugins: list[str] = ()) -> list[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    import generators  # noqa: F401  (register)
    import policies  # noqa: F401
    import verifiers  # noqa: F401
    from loop.plugins import load_plugins

    load_plugins(plugins)  # installed packages' entry points, and the given plugins: entries
    from generators.base import GENERATORS
    from policies.base import POLICIES
    from verifiers.base import VERIFIERS

    sections = [("generator families (generators[].family)", GENERATORS.describe()),
                ("verifiers (verifiers[].name)", VERIFIERS.describe())]
    for role in ("acceptance", "targeting", "stopping"):
        rows = [row for row in POLICIES.describe() if POLICIES.get(row[0]).role == role]
        sections.append((f"{role} policies (policies.{role}.name)", rows))
    return sections


def print_catalog(plugins: list[str] = ()) -> None:
    from generators.base import GENERATORS
    from policies.base import POLICIES
    from verifiers.base import VERIFIERS

    for title, rows in catalog(plugins):
        print(f"\n{title}:")
        registry = GENERATORS if title.startswith("generator") else VERIFIERS if title.startswith("verifier") \
            else POLICIES
        for name, desc, opts in rows:
            print(f"  {name:<16} {desc}")
            print(f"  {'':<16}   from: {registry.source(name)}")
            if title.startswith("generator"):
                try:
                    cats = GENERATORS.build(name, {}).categories()
                    shown = ", ".join(cats[:12]) + (f", ... ({len(cats)} in all)" if len(cats) > 12 else "")
                    print(f"  {'':<16}   categories: {shown}")
                except Exception as e:  # noqa: BLE001 - a family that needs options (files) says so
                    print(f"  {'':<16}   categories: depend on options ({str(e).splitlines()[0][:80]})")
            for o, spec in opts.items():
                print(f"  {'':<16}   {o}: {spec}")
