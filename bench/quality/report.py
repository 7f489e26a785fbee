"""What `make quality` prints: the NER sides with their ratios, the trained-head proxy, the RL runs before → after."""

from __future__ import annotations

import statistics

SIDE_NAMES = {"felix-lora": "felix LoRA", "gliner2-lora": "gliner2 trainer LoRA", "felix-full": "felix full",
              "gliner2-full": "gliner2 trainer full", "token-classification": "token classification (HF)"}
RATIOS = [("felix/gliner2 LoRA", "felix-lora", "gliner2-lora"), ("felix/gliner2 full", "felix-full", "gliner2-full"),
          ("felix/token-classification LoRA", "felix-lora", "token-classification"),
          ("felix/token-classification full", "felix-full", "token-classification")]


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def mean_f1(ner: dict, side: str) -> float | None:
    values = [s[side]["f1"] for s in ner.get("seeds", {}).values() if side in s and "f1" in s[side]]
    return round(statistics.mean(values), 4) if values else None


def ner_table(ner: dict) -> str:
    if "skipped" in ner:
        return f"NER: skipped ({ner['skipped']})"
    if "split" not in ner:
        return "NER: no result (see the log above)"
    split = ner["split"]
    labels = sorted({lab for s in ner["seeds"].values() for side in s.values() for lab in side.get("per_label", {})})
    head = (f"NER: {ner['model']} on an unseen-mention split of WNUT-17 train: train {split['train']['records']} "
            f"records ({split['train']['mentions']} mentions), test {split['test']['records']} records "
            f"({split['test']['mentions']} mentions; {split['test_mentions_in_train_mentions']} of its distinct "
            f"mentions are training mentions, {split['test_mentions_in_train_text']} occur in training text)")
    rows = [["side", "seed", "micro-F1", "P", "R", *labels, "wall s"]]
    for seed, sides in ner["seeds"].items():
        for side, fig in sides.items():
            if "error" in fig:
                rows.append([SIDE_NAMES.get(side, side), seed, "error", "", "", *[""] * len(labels), _f(fig.get("wall_s"), 0)])
                continue
            rows.append([SIDE_NAMES.get(side, side), seed, _f(fig["f1"]), _f(fig["precision"]), _f(fig["recall"]),
                         *[_f(fig["per_label"].get(lab)) for lab in labels], _f(fig.get("wall_s"), 0)])
    lines = [head, _grid(rows)]
    errors = [f"  {side} (seed {seed}): {fig['error']}" for seed, sides in ner["seeds"].items()
              for side, fig in sides.items() if "error" in fig]
    if errors:
        lines += ["errors:", *errors]
    lines.append(f"ratios of micro-F1{' (means over seeds ' + ', '.join(ner['seeds']) + ')' if len(ner['seeds']) > 1 else ''}:")
    for name, felix, base in RATIOS:
        a, b = mean_f1(ner, felix), mean_f1(ner, base)
        if a is not None and b is not None:
            lines.append(f"{name}: {a:.3f} vs {b:.3f} = " + (f"{a / b:.2f}x" if b else "n/a (baseline F1 0)"))
    return "\n".join(lines)


def proxy_table(proxy: dict) -> str:
    if "skipped" in proxy:
        return f"trained-head proxy: skipped ({proxy['skipped']})"
    if "trained_head" not in proxy:
        return f"trained-head proxy: no result ({proxy.get('error', 'see the log above')})"
    lines = [f"trained-head proxy: {proxy['model']} trained on the quickstart set "
             f"({proxy.get('quickstart_train_records')} records, job {proxy['trained_head'].get('job')}, "
             f"{_f(proxy['trained_head'].get('wall_s'), 0)} s), then on WNUT-17 from checkpoint "
             f"{proxy['trained_head'].get('checkpoint', '-')} (job {(proxy.get('fine_tuned') or {}).get('job', '-')}, "
             f"{_f((proxy.get('fine_tuned') or {}).get('wall_s'), 0)} s)"]
    rows = [["F1 (felix-train eval)", "before", "after"]]
    for key, label in (("wnut17", "WNUT-17 test (unseen split)"), ("quickstart_date", "quickstart held-out, date"),
                       ("quickstart", "quickstart held-out, all labels")):
        before = (proxy.get("before") or {}).get(key, {})
        after = (proxy.get("after") or {}).get(key, {})
        rows.append([label, _f(before.get("f1")), _f(after.get("f1"))])
    lines.append(_grid(rows))
    if "error" in proxy:
        lines.append(f"error: {proxy['error']}")
    return "\n".join(lines)


RL_ROWS = {
    "sft": [("perplexity", "held-out perplexity"), ("loss", "held-out loss")],
    "dpo": [("reward_accuracy", "reward_accuracy"), ("reward_margin", "reward margin"),
            ("logp_accuracy", "logp_accuracy")],
    "grpo-arithmetic": [("numeric_accuracy", "held-out accuracy")],
    "grpo-gsm8k": [("numeric_accuracy", "held-out accuracy")],
}
RL_TITLES = {"sft": "SFT dolly", "dpo": "DPO hh-rlhf", "grpo-arithmetic": "GRPO arithmetic", "grpo-gsm8k": "GRPO GSM8K"}


def rl_table(rl: dict) -> str:
    rows = [["run", "figure", "base", "trained", "train/held-out", "job wall s"]]
    notes = []
    for name, figures in RL_ROWS.items():
        res = rl.get(name)
        if res is None:
            continue
        if "skipped" in res or "before" not in res:
            rows.append([RL_TITLES[name], "skipped" if "skipped" in res else "error", "", "", "", _f(res.get("wall_s"), 0)])
            notes.append(f"  {RL_TITLES[name]}: {res.get('skipped') or res.get('error')}")
            continue
        title = RL_TITLES[name]
        for key, label in figures:
            rows.append([title, label, _f(res["before"].get(key)), _f(res["after"].get(key)),
                         f"{res['train_records']}/{res['held_out_records']}" if title else "",
                         _f(res.get("wall_s"), 0) if title else ""])
            title = ""
        for when in ("before", "after"):
            if "error" in res[when]:
                notes.append(f"  {RL_TITLES[name]} {when}: {res[when]['error']}")
    lines = [f"RL/SFT: {rl.get('model')} ({rl.get('budget')} budget)", _grid(rows)]
    return "\n".join(lines + (["errors:", *notes] if notes else []))


def tables(results: dict) -> str:
    parts = []
    if "ner" in results:
        parts.append(ner_table(results["ner"]))
    if "proxy" in results:
        parts.append(proxy_table(results["proxy"]))
    if "rl" in results:
        parts.append(rl_table(results["rl"]))
    return "\n\n".join(parts)
