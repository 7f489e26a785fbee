"""`felix-train estimate SPEC [--json] [--device D] [--no-probe]`: the estimate as text or one JSON object.

Exit codes as `validate`: 0, 2 spec invalid, 3 dataset invalid (an over-long record under `length_policy:
error` among them, with file and line).
"""

from __future__ import annotations

import json
import sys

from felix_train.errors import DatasetError, FelixError, SpecError


def format_estimate(e: dict) -> str:
    t, m = e["time"], e["memory"]
    lines = [f"{e['base_model']} {e['training_type']} {e['training_algorithm']} on {e['device']} ({e['precision']})"]
    for name, d in e["datasets"].items():
        tr, ev = d.get("train", {}), d.get("eval", {})
        cut = {**tr.get("reasons", {})}
        lines.append(f"  dataset {name}: train {tr.get('records', d.get('records'))} records / {tr.get('tokens')} "
                     f"{e['unit']}, eval {ev.get('records')}" + (f"; {cut}" if cut else ""))
    lines.append(f"  steps {e['steps']} ({e['steps_per_epoch']} per epoch, {e['epochs']} epoch(s)); "
                 f"{e['trained_records']} records, {e['tokens']['trained']} {e['unit']} trained"
                 + ("" if e["exact"] else " (approximate)"))
    basis = t.get("basis", {})
    lines.append(f"  time: {t.get('wall_s')} s wall ({t.get('train_s')} s training + {t.get('overhead_s')} s "
                 f"overhead) from {basis.get('source')} {basis.get('key', '')}".rstrip())
    for name, b in (e.get("budget") or {}).items():
        verdict = {True: "fits", False: "does not fit: the job stops at the budget with its model",
                   None: "unknown"}[b["fits"]]
        lines.append(f"  budget {name}: {b['limit']} against {b['predicted']} predicted: {verdict}")
    if m is None:
        lines.append("  memory: unknown (the model is not on disk yet)")
    else:
        lines.append(f"  memory: {m['peak_mb']} MB peak (weights {m['weights_mb']}, gradients {m['gradients_mb']}, "
                     f"optimizer {m['optimizer_mb']}, activations {m['activations_mb']}, baseline {m['baseline_mb']} "
                     f"{m['baseline_from']}); {m['trainable_parameters']:,} of {m['parameters']:,} parameters "
                     "trainable")
        fit = m.get("micro_batches")
        if fit is not None:
            lines.append(f"  {fit['summary']}" if fit["fits"] else f"  memory: does not fit: {fit['error']}")
    lines.append(f"  hyperparameters: {json.dumps(e['hyperparameters'], default=str)}")
    lines.extend(f"  note: {n}" for n in e["notes"])
    return "\n".join(lines)


def main(args) -> int:
    from felix_train.estimate import estimate
    from felix_train.spec import load_spec

    try:
        spec = load_spec(args.spec, home=args.home)
        result = estimate(spec, home=args.home, device=args.device, probe=not args.no_probe)
    except (SpecError, DatasetError) as err:
        if args.json:
            print(json.dumps({"detail": err.to_list()}, indent=2))
        else:
            print(str(err), file=sys.stderr)
        if isinstance(err, SpecError):
            from felix_train.runner import _spec_exit_code

            return int(_spec_exit_code(err))
        return 3
    except FelixError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(getattr(err, "exit_code", 1))
    print(json.dumps(result, indent=2, default=str) if args.json else format_estimate(result))
    return 0
