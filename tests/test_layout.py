"""The package's shape: imports run one way (no cycle, counting imports inside functions too), no
module takes a private name from another, no module is named after a paper part, every module has
its line in the README's layout and its test file (or a line in tests/README.md)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "biolab"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported biolab module, names taken from it) for every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("biolab")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("biolab"):
            for a in node.names:  # `from biolab.eval import memorization` imports a module
                sub = f"{node.module}.{a.name}"
                found.append((sub, []) if sub in known else (node.module, [a.name]))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _ in imports(p, set(mods)) if t in mods and t != m} for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_biolab():
    edges = graph()
    # a package's __init__ is imported with each of its modules: count it as a dependency of them
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_no_private_name_is_imported_from_another_module():
    mods = modules()
    bad = [f"{m}: {t}.{n}" for m, p in mods.items() for t, names in imports(p, set(mods)) for n in names
           if n.startswith("_") and not n.endswith("__")]  # fmt: skip
    assert not bad, bad


def test_no_module_or_config_key_is_named_after_a_paper_part():
    assert not [m for m in modules() if re.search(r"\d\d", m.rsplit(".", 1)[-1])]
    keys = re.findall(r"^(\w+):", (ROOT / "conf" / "run.yaml").read_text(), flags=re.M)
    assert keys and not [k for k in keys if re.search(r"3[123]", k)]


def test_the_core_does_not_reach_up_into_the_layers_above_it():
    top = ("biolab.stages", "biolab.pipeline", "biolab.report")
    below = {"biolab.data": ("biolab.train", "biolab.eval", "biolab.probe", *top),
             "biolab.train": ("biolab.eval", "biolab.probe", *top),
             "biolab.eval": ("biolab.train", "biolab.probe", *top),
             "biolab.probe": ("biolab.train", "biolab.eval", *top),
             "biolab.stages": ("biolab.pipeline", "biolab.report"),
             # peers: the runner builds stages, the report reads them, neither knows the other
             "biolab.pipeline": ("biolab.report",),
             "biolab.report": ("biolab.pipeline",)}  # fmt: skip
    wrong = [f"{m} -> {t}" for m, targets in graph().items() for t in targets for pkg, banned in below.items()
             if m.startswith(pkg + ".") and t.startswith(banned)]  # fmt: skip
    assert not wrong, wrong


def layout_paths() -> set[str]:
    """The module paths the README's layout block names: ``biolab/`` then files and folders indented
    under it (two spaces a level), each with its one line."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout") :].split("```")[1]
    paths, folders = set(), {0: "biolab"}
    inside = False
    for line in block.splitlines():
        name = line.strip().split(" ")[0]
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if depth == 0:
            inside = name == "biolab/"  # conf/, scripts/ and the rest follow the package
        if depth < 1 or not name or not inside:
            continue
        if name.endswith("/"):
            folders[depth] = f"{folders[depth - 1]}/{name.rstrip('/')}"
        elif name.endswith(".py") and line.strip() != name:  # a file with its line of description
            paths.add(f"{folders[depth - 1]}/{name}")
    return paths


def test_every_module_has_a_line_in_the_readme_layout_and_a_test():
    layout = layout_paths()
    lines = (ROOT / "tests" / "README.md").read_text().splitlines()
    table = {line.split("|")[1].strip(" `"): line for line in lines if line.startswith("| `biolab/")}
    missing_doc, missing_test = [], []
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py":
            continue
        if rel not in layout:
            missing_doc.append(rel)
        named = re.findall(r"`(test_\w+\.py)`", table.get(rel, ""))
        if not named or not all((ROOT / "tests" / t).is_file() for t in named):
            missing_test.append(rel)
    assert not missing_doc, f"modules without a line in the README's layout: {missing_doc}"
    assert not missing_test, f"modules without an existing test file in tests/README.md: {missing_test}"
