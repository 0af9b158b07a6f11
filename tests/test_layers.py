"""The architecture as executable rules (read from the source with ``ast``, nothing is imported):

- layers: generation <- data <- train <- eval <- tracking <- study/cli: a module never imports a higher layer
  (lazy imports inside functions count; ``if TYPE_CHECKING:`` imports do not, they never run);
- ``ssft/config.py`` sits beside the foundation (errors, atomic, env) and reads only choice lists
  (UPPER_CASE constants) from the modules that own them;
- MLflow only in ``ssft/tracking/``, Prefect and DVC only in ``flows/``; no import cycle between modules;
- one home per list of choices and per file name: no second literal copy anywhere in the package;
- each stage's code list (``ssft.stages``) covers every module the stage can run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lower index = lower layer. The foundation is importable from everywhere.
FOUNDATION = ("ssft.errors", "ssft.atomic", "ssft.env", "ssft.config", "ssft.stages", "ssft.lifeline")
LAYERS = ("ssft.generation", "ssft.data", "ssft.train", "ssft.eval", "ssft.tracking", "ssft.study|ssft.cli")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines |= set(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """(module, imported names, line) for every import that runs, lazy ones included."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, tuple(a.name for a in node.names), node.lineno))
    return out


def sources(*dirs: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for d in dirs for p in (root / d).rglob("*.py"))


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """ssft module -> the ssft modules it imports (``from ssft.train import models`` names ssft.train.models)."""
    files = {module_name(p, root): p for p in sources("ssft", root=root)}
    edges: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets = set()
        for target, names, _ in imports(path):
            if not target.startswith("ssft"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            targets |= set(subs) if subs else {target}
        edges[mod] = targets - {mod}
    return edges


def layer(mod: str) -> int | None:
    if mod in FOUNDATION:
        return None
    for k, group in enumerate(LAYERS):
        if any(mod == g or mod.startswith(g + ".") for g in group.split("|")):
            return k
    return None


def upward_imports(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sources("ssft", root=root):
        mod = module_name(path, root)
        for target, names, line in imports(path):
            if not target.startswith("ssft"):
                continue
            if mod == "ssft.config":  # reads choice lists from their owners, nothing else
                if layer(target) is not None and not all(n.isupper() for n in names):
                    bad.append(f"{path.relative_to(root)}:{line}: config imports {names} from {target}")
                continue
            here, there = layer(mod), layer(target)
            if mod in FOUNDATION and target not in FOUNDATION:
                bad.append(f"{path.relative_to(root)}:{line}: foundation module imports {target}")
            elif here is not None and there is not None and there > here:
                bad.append(f"{path.relative_to(root)}:{line}: {mod} (layer {LAYERS[here]}) imports {target} "
                           f"(higher layer {LAYERS[there]})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (depth-first search; each reported once by its smallest member)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                found.append(cycle)
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports() == []


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "ssft", tmp_path / "ssft", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ssft" / "data" / "leak.py").write_text("def f():\n    from ssft.eval import metrics\n")
    assert any("ssft.data.leak" in b for b in upward_imports(tmp_path))


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}), "the cycle finder finds a planted cycle"


@pytest.mark.parametrize(("package", "home"), [("mlflow", "ssft/tracking"), ("prefect", "flows"), ("dvc", "flows")])
def test_services_are_imported_only_at_their_edge(package: str, home: str) -> None:
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in sources("ssft", "flows", "bench")
           for target, _, line in imports(p)
           if (target == package or target.startswith(package + ".")) and not p.is_relative_to(ROOT / home)]
    assert bad == [], f"{package} belongs in {home}/ only"


def choice_lists() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each list of choices and the module that owns it."""
    from ssft.data.checkers import CHECKERS
    from ssft.data.sources.teachers import BACKENDS
    from ssft.train.methods import NAMES
    from ssft.train.precision import DTYPES, KERNELS

    return {"methods": ("ssft/train/methods.py", NAMES), "checkers": ("ssft/data/checkers.py", tuple(CHECKERS)),
            "dtypes": ("ssft/train/precision.py", DTYPES), "kernels": ("ssft/train/precision.py", KERNELS),
            "teacher backends": ("ssft/data/sources/teachers.py", BACKENDS)}


# File names and their one home: the stage that writes them.
FILE_NAMES = {"metrics.json": "ssft/eval/evaluate.py", "details.jsonl": "ssft/eval/evaluate.py",
              "tags.json": "ssft/train/models.py", "train_stats.json": "ssft/train/models.py",
              "stats.json": "ssft/data/dataset.py", "gfpo_stats.json": "ssft/train/gfpo.py"}


def literal_copies(root: Path = ROOT) -> list[str]:
    """Places outside a list's (or a file name's) home that spell it out again."""
    lists = choice_lists()
    bad = []
    for path in sources("ssft", root=root):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                values = {e.value for e in node.elts}  # type: ignore[attr-defined]
                for what, (home, choices) in lists.items():
                    if rel != home and values == set(choices):
                        bad.append(f"{rel}:{node.lineno}: a copy of the {what} ({home})")
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES and FILE_NAMES[node.value] != rel:
                bad.append(f"{rel}:{node.lineno}: {node.value!r} spelled out (its home: {FILE_NAMES[node.value]})")
    return bad


def test_each_choice_list_and_file_name_has_one_home() -> None:
    assert literal_copies() == []


def test_the_one_home_check_catches_a_copy(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "ssft", tmp_path / "ssft", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ssft" / "eval" / "copy.py").write_text(
        'DT = ("float32", "bfloat16", "float16")\nOUT = "metrics.json"\n')
    found = literal_copies(tmp_path)
    assert any("copy of the dtypes" in b for b in found) and any("'metrics.json'" in b for b in found)


def test_config_reads_its_choices_from_their_owners() -> None:
    import ssft.config as config

    for _, (home, choices) in choice_lists().items():
        assert any(tuple(getattr(config, n, ())) == tuple(choices) for n in dir(config) if n.isupper()), home


# -- stages ---------------------------------------------------------------------------------------------
ENTRY = {"traces": "ssft.data.dataset", "train": "ssft.train.trainer", "evaluate": "ssft.eval.evaluate",
         "gfpo": "ssft.train.gfpo"}


def closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    """Every module ``start`` can execute. Config's imports of choice lists are not followed: it reads a
    constant there, never runs that module's code."""
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo += sorted(t for t in edges.get(mod, ()) if mod != "ssft.config" or t in FOUNDATION)
    return seen


def module_file(mod: str) -> str:
    p = ROOT / Path(*mod.split("."))
    return (p / "__init__.py" if p.is_dir() else p.with_suffix(".py")).relative_to(ROOT).as_posix()


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_a_stage_code_list_covers_every_module_it_runs(stage: str) -> None:
    from ssft import stages

    listed = {f.relative_to(ROOT).as_posix() for f in stages.code_files(stage)}
    ran = {module_file(m) for m in closure(ENTRY[stage], graph())}
    assert ran - listed == set(), f"{stage} runs code its list (ssft/stages.py) leaves out"
