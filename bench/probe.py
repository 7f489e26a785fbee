#!/usr/bin/env python
"""Run a Python module or script under timing probes and write what they saw as JSON.

Usage:
    python bench/probe.py --out FILE [--count-tokens PAD_ID] -- -m felix_train SPEC --job-id ID
    python bench/probe.py --out FILE -- bench/baselines/trl_sft.py --data ...
    python bench/probe.py --out FILE --count-tokens PAD_ID --time-generate -- -m felix_train GRPO_SPEC

The probes are trainer-agnostic, so felix and a hand-written baseline are measured the same way:

- nothing is imported before the measured code runs: the hooks go in right after its own `import torch`;
- every optimizer step (`torch.optim.optimizer.register_optimizer_step_post_hook`) records the wall
  clock (`time.time()`, comparable with the parent's launch time in `$FELIX_BENCH_T0`), this
  process's CPU time, and the running count of real tokens;
- with `--count-tokens PAD_ID`, a global forward pre-hook counts the non-padding ids (`!= PAD_ID`)
  that enter an `nn.Embedding` with grad enabled in training mode: the real tokens of each
  training forward (generation and evaluation run without grad or in eval mode and are not
  counted). A model with one token embedding is assumed (decoder LLMs). Per row of such a batch the
  square of its real-token count is summed too (`tokens_sq`): Σn²/Σn is the mean sequence length a token
  attends over, the T of the attention term in the FLOPs per token;
- with `--time-generate`, transformers' `GenerationMixin.generate` is wrapped (right after
  `transformers.generation.utils` is first imported): its wall seconds and the new non-padding tokens
  it returned are summed (GRPO rollouts, measured from the outside).

The JSON (rewritten after every optimizer step, so a killed run leaves the steps it made; `exit_code` is
null until the run ends) holds `t0` (launch), `steps` ([wall, cpu, tokens, tokens_sq, generate_s, generated_tokens] after
each optimizer step, the last four running totals), `exit_code`,
and this process's peak RSS; the parent adds what `os.wait4` reports for the whole child.
Nothing here changes what the measured code does.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time

T_IMPORT = time.time()


class _AfterImport:
    """A meta path finder that calls `then()` right after module `name` is first executed, once.

    It answers every lookup of `name` with the path finder's own spec, its loader wrapped: libraries probe
    for torch with `importlib.util.find_spec("torch")` long before importing it, and those probes must not
    use up the hook.
    """

    def __init__(self, name: str, then):
        self.name, self.then, self.done = name, then, False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self.done:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then(module):
            exec_module(module)
            if not self.done:
                self.done = True
                sys.meta_path.remove(self)
                self.then()

        spec.loader.exec_module = exec_then
        return spec


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("usage: probe.py --out FILE [--count-tokens PAD_ID] -- (-m MODULE | SCRIPT) [ARGS...]")
    split = argv.index("--")
    own, target = argv[:split], argv[split + 1:]
    out = own[own.index("--out") + 1]
    pad_id = int(own[own.index("--count-tokens") + 1]) if "--count-tokens" in own else None
    time_generate = "--time-generate" in own
    t0 = float(os.environ.get("FELIX_BENCH_T0", T_IMPORT))

    steps: list[list[float]] = []
    tokens = [0, 0, 0.0, 0]  # real tokens, Σ per-row real tokens², generate() seconds, generated tokens

    def install() -> None:
        """The hooks, installed once torch is imported (by the measured code: the probe never imports it first,
        so whatever the measured code sets up before its own `import torch`, OpenMP settings included, holds)."""
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def on_step(optimizer, args, kwargs):
            steps.append([time.time(), time.process_time(), *tokens])
            write()  # after every step: a run killed by the parent's timeout still leaves its figures

        register_optimizer_step_post_hook(on_step)
        if pad_id is None:
            return
        from torch.nn.modules.module import register_module_forward_pre_hook

        embedding = torch.nn.Embedding

        def on_forward(module, inputs):
            if type(module) is embedding and module.training and torch.is_grad_enabled() and inputs:
                ids = inputs[0]
                if isinstance(ids, torch.Tensor) and not ids.is_floating_point():
                    per_row = (ids != pad_id).reshape(-1, ids.shape[-1]).sum(dim=-1)
                    tokens[0] += int(per_row.sum())
                    tokens[1] += int((per_row * per_row).sum())

        register_module_forward_pre_hook(on_forward)

    def wrap_generate() -> None:
        """Time `GenerationMixin.generate` and count the new non-padding tokens it returns."""
        from transformers.generation.utils import GenerationMixin

        generate = GenerationMixin.generate

        def timed(self, *args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            start = time.time()
            out = generate(self, *args, **kwargs)
            tokens[2] += time.time() - start
            seqs = getattr(out, "sequences", out)
            prompt = ids.shape[-1] if hasattr(ids, "shape") else 0
            if hasattr(seqs, "shape") and seqs.shape[-1] > prompt:
                new = seqs[..., prompt:]
                tokens[3] += int((new != pad_id).sum()) if pad_id is not None else int(new.numel())
            return out

        GenerationMixin.generate = timed

    sys.meta_path.insert(0, _AfterImport("torch", install))
    if time_generate:
        sys.meta_path.insert(0, _AfterImport("transformers.generation.utils", wrap_generate))

    code = None  # None while running: the file then holds the steps so far

    def write() -> None:
        torch = sys.modules.get("torch")
        report = {"t0": t0, "t_probe": T_IMPORT, "steps": steps, "exit_code": code,
                  "maxrss_kb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "threads": torch.get_num_threads() if torch is not None else None}
        tmp = f"{out}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh)
        os.replace(tmp, out)

    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        sys.path[0] = os.getcwd()  # what `python -m` puts first (instead of this script's folder)
        runner, what = runpy.run_module, target[1]
        kwargs = {"run_name": "__main__", "alter_sys": True}
    else:
        sys.argv = list(target)
        sys.path[0] = os.path.dirname(os.path.abspath(target[0]))  # what `python SCRIPT` puts first
        runner, what = runpy.run_path, target[0]
        kwargs = {"run_name": "__main__"}
    try:
        runner(what, **kwargs)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        code = 1
        write()
        raise
    code = code or 0
    write()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
