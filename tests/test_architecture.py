"""The package's shape: wings that import only downward, no import circles, a small root."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ignore"
# Each layer may import its own and the layers before it, never a later one.
LAYERS = [
    {"ignore.errors", "ignore.files", "ignore.config", "ignore.metrics"},  # the ground
    {"ignore.data"},
    {"ignore.models"},
    {"ignore.losses"},
    {"ignore.training", "ignore.inference"},  # one training run; using a finished export
    {"ignore.train", "ignore.predict", "ignore.evaluate", "ignore.compare", "ignore.export"},  # the commands
]


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """The package's modules that `path` imports (at any depth of the file, relative or absolute)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).is_file() \
                    or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                found.add(candidate if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {module for module in found if module == "ignore" or module.startswith("ignore.")}


def graph():
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def layer_of(module):
    for index, layer in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer):
            return index
    raise AssertionError(f"{module} is in no layer")


def test_every_import_goes_to_the_same_or_an_earlier_layer():
    upward = [f"{module} -> {target}" for module, targets in graph().items() if module != "ignore"
              for target in targets if layer_of(target) > layer_of(module)]
    assert upward == []


def test_no_import_circles():
    edges, state, circles = graph(), {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_root_holds_the_commands_and_the_ground_beside_the_wings():
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert modules == {"config", "errors", "files", "metrics", "train", "predict", "evaluate", "compare", "export"}
    assert packages == {"data", "models", "losses", "training", "inference"}
