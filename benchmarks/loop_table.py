"""The table of ``loop_figures.py``: each measured figure beside its goal, and how it was
measured. Pure: figures in, rows out."""

from __future__ import annotations

import statistics
import sys
from typing import Any

Row = dict[str, Any]

# The project's targets (from the brief / README), compared against, never reported as results.
GOALS = {
    "convert_s": 60.0,
    "ask_s": 5.0,
    "load_s": 1.0,
    "cycle_s": 180.0,
    "memory_bytes": 4e9,
    "swap_s": 0.300,
}


def goal_s(value: float | None, key: str, op: str = "<=") -> str:
    """The goal column for a figure whose goal is in seconds."""
    return f"{op} {GOALS[key]:.0f} s {verdict(value, GOALS[key])}"


def verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "n/a"
    return "ok" if value <= goal else "MISSED"


def build_table(f: Row) -> list[Row]:
    rows: list[Row] = []

    def add(what: str, value: str, goal: str, how: str) -> None:
        rows.append({"what": what, "value": value, "goal": goal, "how": how})

    c = f.get("conversion")
    if c:
        v = c["wall_s_median"]
        add(
            "1 first-run GGUF->safetensors conversion",
            f"{v:.1f} s",
            goal_s(v, "convert_s", "<="),
            f"subprocess resolve_model(None), fresh root, wall incl. python start "
            f"(in-process {c['in_process_s'][0]:.1f} s; runs {c['wall_s']})",
        )
    a = f.get("ask")
    if a:
        v = a["wall_s_median"]
        add(
            "2 `learnloop ask --json --max-new-tokens 32`, warm",
            f"{v:.2f} s",
            goal_s(v, "ask_s", "<="),
            f"whole command wall, median of {a['wall_s']}; JSON answer on stdout after "
            f"{a['answer_printed_s_median']:.2f} s, then {a['exit_after_answer_s_median']:.2f} s "
            "until exit",
        )
        add(
            "  of which generation (in-process)",
            f"{statistics.median(a['generation_s']):.2f} s",
            "context",
            f"the logged turn's total_ms, {a['generation_s']} s for {a['completion_tokens']} "
            f"tokens; the rest before the answer {a['other_before_answer_s_median']:.2f} s",
        )
    av = (f.get("swap") or {}).get("ask_with_version")
    if av:
        v = av["wall_s_median"]
        add(
            "2 the same with a learned version active",
            f"{v:.2f} s",
            goal_s(v, "ask_s", "<="),
            f"in the cycle's data root after step 5 (PEFT + adapter load), median of "
            f"{av['wall_s']}",
        )
    imp = f.get("import_floor")
    if imp:
        add(
            "  python + imports (torch, transformers, langgraph, agent)",
            f"{imp['wall_s_median']:.2f} s",
            "context",
            f"subprocess `python -c 'import ...'`, median of {imp['wall_s']}",
        )
    ld = f.get("load")
    if ld:
        v = ld["load_s_median"]
        add(
            "2 base model load from safetensors",
            f"{v * 1000:.0f} ms",
            goal_s(v, "load_s", "<"),
            f"TransformersBackend(...) in a process with transformers/trl/peft imported, "
            f"median of {ld['load_s']} s",
        )
    lc = f.get("load_cold")
    if lc:
        v = lc["first_s_median"]
        add(
            "  first load in a fresh process",
            f"{v * 1000:.0f} ms",
            goal_s(v, "load_s", "<"),
            f"after `import torch, transformers` ({lc['imports_s']} s): first construction "
            f"{lc['first_s']} s (lazy imports), second {lc['second_s']} s",
        )
    g = f.get("generation")
    if g:
        add(
            "3 generation tokens/s, batch 1",
            f"{g['tok_s_median']:.1f} tok/s",
            "-",
            f"TransformersBackend.stream greedy, max_new_tokens {g['settings']['max_new_tokens']}, "
            f"{len(g['runs'])} runs; completion/(call..end); aggregate {g['tok_s_aggregate']:.1f}, "
            f"decode-only {g['decode_tok_s_median']:.1f}",
        )
        add(
            "3 time to first streamed text",
            f"{g['ttft_s_median'] * 1000:.0f} ms",
            "-",
            "stream() call to first non-empty text piece (streamer emits whole words), median",
        )
    t = f.get("turns")
    if t:
        add(
            f"4 {t['asks']} turns via load_agent + Agent.ask",
            f"{t['turns_s']:.1f} s",
            "context",
            f"{t['regens']} of them /regen; {t['ask_s_median']:.2f} s/turn median, max_new_tokens "
            f"48, {t['completion_tokens_total']} tokens; load_agent {t['load_agent_s']:.2f} s; "
            f"{t['regens_identical_to_original']} regen(s) identical to the original",
        )
        fc = t["feedback_counts"]
        add(
            "4 feedback items",
            str(t["feedback_items"]),
            "context",
            f"{fc['up']} up, {fc['down_with_correction']} down+correction, {fc['down']} down; "
            f"store.add_feedback total {t['feedback_s'] * 1000:.0f} ms",
        )
    lr = f.get("learn")
    if lr:
        v = lr["wall_s"]
        add(
            "4 learning cycle `learnloop learn --json`",
            f"{v:.1f} s",
            goal_s(v, "cycle_s", "<="),
            f"command wall; cycle {lr['cycle_s']} s, trainer child {lr['trainer_s']} s "
            f"(SFT {lr['sft_s']} s/{lr['sft_steps']} steps, DPO {lr['dpo_s']} s/"
            f"{lr['dpo_steps']} steps, KTO {lr['kto_s']} s/{lr['kto_steps']} steps, "
            f"gate {lr['gate_s']} s)",
        )
        add(
            "4 training data",
            f"{lr['sft_examples']} SFT / {lr['dpo_pairs']} DPO / {lr['kto_rows']} KTO",
            "-",
            f"from {lr['feedback_used']} feedback items, {lr['heldout']} held out; method "
            f"{lr['method']}",
        )
        add(
            "4 gate verdict",
            "promoted" if lr["promoted"] else "rejected",
            "-",
            "; ".join(lr["gate_reasons"] or []),
        )
        mem_goal = GOALS["memory_bytes"]
        tr = lr.get("trainer_peak_rss_mib_self_reported")
        add(
            "4 peak RSS, trainer child",
            f"{tr} MiB" if tr is not None else "n/a",
            f"<= {mem_goal / 1e9:.0f} GB {verdict(tr and tr * 2**20, mem_goal)}",
            "VmHWM of the child (its metrics.json peak_rss_mb)",
        )
        s = lr.get("sampled_peak_rss_mib")
        if s:
            add(
                "4 peak RSS, learn process / learn+trainer",
                f"{s['learn']} / {s['sum']} MiB",
                f"<= {mem_goal / 1e9:.0f} GB {verdict(s['sum'] * 2**20, mem_goal)}",
                f"psutil samples every 0.1 s ({lr['samples']} samples); the sum is the "
                "simultaneous total",
            )
        tv = lr.get("time_v")
        if tv and "max_rss_mib" in tv:
            add(
                "4 /usr/bin/time -v max RSS",
                f"{tv['max_rss_mib']} MiB",
                f"<= {mem_goal / 1e9:.0f} GB {verdict(tv['max_rss_mib'] * 2**20, mem_goal)}",
                f"largest single process of the tree; CPU {tv.get('cpu_percent')}%",
            )
        if "children_max_rss_mib" in lr:
            add(
                "4 max RSS of any child (fallback)",
                f"{lr['children_max_rss_mib']} MiB",
                f"<= {mem_goal / 1e9:.0f} GB",
                "getrusage(RUSAGE_CHILDREN): upper bound over all children of this run",
            )
    sw = f.get("swap")
    if sw:
        v = sw["sync_version_first_s"]
        add(
            "5 adapter swap in running chat, first",
            f"{v * 1000:.0f} ms",
            f"<= {GOALS['swap_s'] * 1000:.0f} ms {verdict(v, GOALS['swap_s'])}",
            f"Agent.sync_version() after the cycle (reopens DB; switch itself "
            f"{sw['switch_first_s'] * 1000:.0f} ms, PeftModel.from_pretrained)",
        )
        if "new_adapter_s_median" in sw:
            v = sw["new_adapter_s_median"]
            add(
                "5 swap to a new adapter, later",
                f"{v * 1000:.0f} ms",
                f"<= {GOALS['swap_s'] * 1000:.0f} ms {verdict(v, GOALS['swap_s'])}",
                f"backend.switch to a copy under a new name (load_adapter+set_adapter), median "
                f"of {[round(x * 1000) for x in sw['new_adapter_s']]} ms",
            )
            add(
                "5 switch to base / back to version",
                f"{sw['to_base_s_median'] * 1000:.1f} / "
                f"{sw['back_to_version_s_median'] * 1000:.0f} ms",
                "-",
                f"medians; version still loaded: {sw['back_to_version_was_loaded']} "
                f"(keep_adapters={sw['keep_adapters']}); back runs "
                f"{[round(x * 1000) for x in sw['back_to_version_s']]} ms",
            )
    return rows


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    w = [max(len(r[k]) for r in rows) for k in ("what", "value", "goal")]
    for r in rows:
        print(
            f"{r['what']:<{w[0]}}  {r['value']:>{w[1]}}  {r['goal']:<{w[2]}}  {r['how']}",
            file=out,
        )
