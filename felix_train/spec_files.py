"""Reading what a job spec names from disk: the spec file itself (YAML or JSON) and the accelerate config of
`engine.distributed.config`.

`load_spec_file` turns every way a file can be wrong into a `SpecError` naming the file and the line (the byte,
for a file that is not UTF-8): a parse error, nesting too deep, and a key repeated in one mapping (YAML through a
`SafeLoader` subclass, JSON through `felix_train.jsonl.reject_duplicate_keys`), which YAML and `json` would
otherwise read as last-wins. `find_accelerate_config` resolves a bundled name or a path and checks the file is an
accelerate config (a mapping with `distributed_type`), so a wrong file is refused at validation, not at launch.
`felix_train.spec` re-exports both. Light: no torch.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from felix_train.errors import ErrorItem, SpecError
from felix_train.jsonl import DuplicateKeyError, reject_duplicate_keys


def load_spec_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON spec file into a dict; a file that is not UTF-8, does not parse, nests too deeply or
    repeats a key in one mapping becomes a SpecError naming the file and the line (the byte, for bad UTF-8)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise SpecError([ErrorItem((), f"spec file {str(path)!r} does not exist", "file_not_found")]) from err
    except OSError as err:
        raise SpecError([ErrorItem((), f"spec file {str(path)!r} cannot be read: {err.strerror or err}",
                                   "file_not_readable")]) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise SpecError([ErrorItem((), f"{path}: not UTF-8 at byte {err.start} (line {line}: "
                                   f"0x{raw[err.start]:02x}); save the file as UTF-8", "encoding_invalid")]) from err
    try:
        if path.suffix.lower() == ".json":
            data = _load_json_spec(text)
        else:
            data = _load_yaml_spec(text)
    except json.JSONDecodeError as err:
        raise SpecError([ErrorItem((), f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", "json_invalid")]) from err
    except DuplicateKeyError as err:
        where = f" at line {err.line}" if err.line else ""
        raise SpecError([ErrorItem((), f"{path}: duplicate key `{err.key}`{where}; a key may appear once per "
                                   "mapping (the second one would silently win): remove one", "duplicate_key")]) from err
    except RecursionError as err:
        raise SpecError([ErrorItem((), f"{path}: nested too deeply to be a spec", "spec_too_deep")]) from err
    except Exception as err:  # yaml.YAMLError carries a mark with the line
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise SpecError([ErrorItem((), f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}", "yaml_invalid")]) from err
    if not isinstance(data, dict):
        raise SpecError([ErrorItem((), f"{path}: a spec is a mapping of fields, got {type(data).__name__}", "model_type")])
    return data


def _load_json_spec(text: str) -> Any:
    """JSON with duplicate keys refused; the duplicate's line is found by the YAML loader (JSON is YAML)."""
    try:
        return json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except DuplicateKeyError as err:
        try:
            _load_yaml_spec(text)
        except DuplicateKeyError as located:
            raise located from err
        except Exception:  # noqa: BLE001 - no line then: the key alone is said
            pass
        raise


def _load_yaml_spec(text: str) -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key repeated in one mapping (merge keys `<<` aside)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: set = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:  # an unhashable key: SafeLoader reports it
                        continue
                    if duplicate:
                        raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


ACCELERATE_CONFIG_DIR = Path(str(files("felix_train") / "configs" / "accelerate")).resolve()
"""Bundled accelerate configs (package data): `engine.distributed.config: ddp` names `<this dir>/ddp.yaml`."""


def find_accelerate_config(config: str) -> tuple[Path, dict]:
    """The accelerate config file `engine.distributed.config` names, and its content.

    A path (absolute, or relative to the working directory), or the name of a bundled config (`ddp`, `fsdp`,
    `deepspeed-zero2`, `deepspeed-zero3`, `multi-node`: `felix_train/configs/accelerate/<name>.yaml`). The file
    must be an accelerate config: a YAML (or JSON) mapping with a `distributed_type`, as `accelerate config`
    writes it.

    Raises:
        SpecError: no such file (`accelerate_config_not_found`), or not an accelerate config
            (`accelerate_config_invalid`).
    """
    loc = ("engine", "distributed", "config")
    path = Path(config).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, ACCELERATE_CONFIG_DIR / path,
                                                    ACCELERATE_CONFIG_DIR / f"{config}.yaml"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        bundled = sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml")) if ACCELERATE_CONFIG_DIR.is_dir() else []
        raise SpecError([ErrorItem(loc, f"no accelerate config {config!r} (looked in "
                                   f"{', '.join(str(c) for c in candidates)}); give a path to one, or a bundled name: "
                                   f"{', '.join(bundled) or 'none found'}", "accelerate_config_not_found")])
    found = found.resolve()
    fix = ("an accelerate config is a YAML mapping with `distributed_type` (e.g. MULTI_GPU, FSDP, DEEPSPEED), as "
           "`accelerate config` writes it; give such a file, or a bundled name (ddp, fsdp, deepspeed-zero2, ...)")
    try:
        import yaml

        data = yaml.safe_load(found.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise SpecError([ErrorItem(loc, f"{config!r} ({found}) cannot be read as YAML ({reason}); {fix}",
                                   "accelerate_config_invalid")]) from err
    if not isinstance(data, dict) or not isinstance(data.get("distributed_type"), str):
        got = "a mapping without `distributed_type`" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise SpecError([ErrorItem(loc, f"{config!r} ({found}) is not an accelerate config: got {got}; {fix}",
                                   "accelerate_config_invalid")])
    return found, data
