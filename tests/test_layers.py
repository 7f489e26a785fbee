"""The one-way flow of DESIGN.md, checked on the source: no module imports a layer above its own.

Imports inside functions count too (a lazy import is still a dependency). The layers, bottom up:
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "felix_train"

# (module prefix, layer): the longest matching prefix wins.
LAYERS = [
    ("felix_train.errors", 0), ("felix_train.job_state", 0), ("felix_train.jobs", 0), ("felix_train.jsonl", 0), ("felix_train.events", 0),
    ("felix_train.catalog", 0),
    ("felix_train.perf", 0), ("felix_train.spec_files", 1),
    ("felix_train.spec", 1), ("felix_train.spec_engine", 1), ("felix_train.budgets", 1), ("felix_train.rl_config", 1), ("felix_train.data", 1), ("felix_train.rewards", 1),
    ("felix_train.checkpoints", 1), ("felix_train.reporting", 1), ("felix_train.metrics_ner", 1), ("felix_train.ner_decoding", 1),
    ("felix_train.models", 2),
    ("felix_train.trainers", 3),
    ("felix_train.evaluate", 4), ("felix_train.estimate", 4), ("felix_train.runner", 4), ("felix_train.launch", 4),
    ("felix_train.service", 5),
    ("felix_train.cli", 6), ("felix_train.cli_jobs", 6), ("felix_train.__main__", 6), ("felix_train", 6),
]
NAMES = {0: "foundation", 1: "specs, data, rewards, reporting", 2: "models", 3: "trainers",
         4: "runner, evaluate", 5: "service", 6: "entry points"}


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
    return {m for m in out if m == "felix_train" or m.startswith("felix_train.")}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts or p.name == "env.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up(path):
    own = layer(module_name(path))
    upward = sorted(m for m in imports(path) if m != "felix_train" and layer(m) > own)
    assert not upward, (f"{module_name(path)} ({NAMES[own]}) imports {upward} from a higher layer; "
                        "move the shared piece down (see tests/test_layers.py LAYERS)")


def test_trainers_never_import_the_service():
    for path in (PACKAGE / "trainers").rglob("*.py"):
        assert not [m for m in imports(path) if m.startswith("felix_train.service")], path
