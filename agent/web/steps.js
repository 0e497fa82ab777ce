/* A turn's tool steps: the fold under its answer ("2 tool calls", one line per call with
   its result), filled live while the answer streams, and the editor that corrects the
   trajectory (a call's arguments, calls removed or added; chat.js adds the final answer).

   The page reads a trajectory in two shapes and handles one:
     - steps, as GET /v1/threads/{id} gives them (agent/report.py step_view): model steps
       with `tool_calls` and `malformed`, tool steps with `tool_call_id`, `name`,
       `arguments`, `content`, `error`, `ms`; the live stream's `learnloop_step` chunks
       are added to the same list (addLiveStep);
     - messages, as a stored correction holds them (OpenAI's shape: assistant messages
       with `tool_calls`, `tool` messages with `tool_call_id`).
   Both become a Trajectory: `{steps: [{content, calls: [Call]}], malformed: [{text, why}]}`,
   a Call being `{id, name, arguments, result}` and `result` `{content, error}` or null
   (not run yet, or never). Only steps that made calls are in it: the final answer is the
   turn's own text.

   Everything shown is text in DOM nodes, never HTML from the model or a tool. */

import { $ } from "./page.js";

/* The Trajectory of stored (or live) steps. */
export function fromSteps(steps) {
  const out = { steps: [], malformed: [] };
  const byId = new Map();
  for (const step of steps || []) {
    if (step.type === "tool") {
      const call = byId.get(step.tool_call_id);
      if (call) call.result = { content: step.content ?? "", error: step.error || null };
      continue;
    }
    out.malformed.push(...(step.malformed || []));
    const calls = (step.tool_calls || []).map(callOf);
    for (const call of calls) byId.set(call.id, call);
    if (calls.length) out.steps.push({ content: step.content ?? null, calls });
  }
  return out;
}

/* The Trajectory of a corrected trajectory's messages (storage/records.py Message). */
export function fromMessages(messages) {
  const out = { steps: [], malformed: [] };
  const byId = new Map();
  for (const message of messages || []) {
    if (message.role === "tool") {
      const call = byId.get(message.tool_call_id);
      if (call) call.result = { content: message.content ?? "", error: null };
    } else if (message.role === "assistant" && (message.tool_calls || []).length) {
      const calls = message.tool_calls.map(callOf);
      for (const call of calls) byId.set(call.id, call);
      out.steps.push({ content: message.content ?? null, calls });
    }
  }
  return out;
}

function callOf(call) {
  const fn = call.function || {};
  return { id: call.id, name: fn.name || "", arguments: fn.arguments || "{}", result: null };
}

function callsOf(trajectory) {
  return trajectory.steps.flatMap((step) => step.calls);
}

/* A live stream's step chunk (`learnloop_step`: `{tool_call}` or `{tool_result}`) added to
   `steps`, in step_view's shape. Calls that arrive before any result belong to one model
   step; a call after a result starts the next step (the model saw the results). */
export function addLiveStep(steps, event) {
  if (event.tool_call) {
    const last = steps[steps.length - 1];
    if (last && last.type === "model") last.tool_calls.push(event.tool_call);
    else steps.push({ type: "model", content: null, tool_calls: [event.tool_call] });
  } else if (event.tool_result) {
    steps.push({ ...event.tool_result, type: "tool" });
  }
}

// ---- the fold and its lines ----------------------------------------------------------------

/* "2 tool calls", "1 tool call, 1 malformed"; "" when there is nothing to show. */
export function summaryOf(trajectory) {
  const n = callsOf(trajectory).length;
  const bad = trajectory.malformed.length;
  const parts = [];
  if (n) parts.push(`${n} tool call${n === 1 ? "" : "s"}`);
  if (bad) parts.push(n ? `${bad} malformed` : `${bad} malformed tool call${bad === 1 ? "" : "s"}`);
  return parts.join(", ");
}

/* One line per call: `name(arguments) → result`; a failed call's line is marked ✗ and
   says why; a call still running (live) ends in "…". */
export function renderLines(list, trajectory) {
  const lines = callsOf(trajectory).map((call) => {
    const item = line("step-line");
    item.append(code("call", `${call.name}(${call.arguments})`));
    const result = call.result;
    if (!result) {
      item.classList.add("pending");
      item.append(mark("…"));
    } else {
      item.classList.toggle("error", Boolean(result.error));
      item.append(mark(result.error ? "✗" : "→"), code("result", result.content));
      if (result.error) item.title = `the call failed (${result.error})`;
    }
    return item;
  });
  for (const bad of trajectory.malformed) {
    const item = line("step-line error");
    item.append(mark("✗"), text(`malformed call (${bad.why}): `), code("call", bad.text));
    lines.push(item);
  }
  list.replaceChildren(...lines);
  rememberTools(trajectory);
}

/* Fills the fold (a <details>): hidden when the turn made no call; `open` sets whether it
   is unfolded (undefined: left as the person set it). */
export function renderFold(details, trajectory, open) {
  const summary = summaryOf(trajectory);
  details.hidden = !summary;
  details.querySelector("summary").textContent = summary;
  renderLines(details.querySelector("ol"), trajectory);
  if (open !== undefined) details.open = open;
}

function line(className) {
  const item = document.createElement("li");
  item.className = className;
  item.dataset.testid = "step-line";
  return item;
}

function code(className, value) {
  const el = document.createElement("code");
  el.className = className;
  el.textContent = value;
  return el;
}

function mark(value) {
  const el = document.createElement("span");
  el.className = "step-mark";
  el.setAttribute("aria-hidden", "true");
  el.textContent = ` ${value} `;
  return el;
}

function text(value) {
  return document.createTextNode(value);
}

/* The names of the tools seen on this page, offered when a person adds a call. */
function rememberTools(trajectory) {
  const list = $("tool-names");
  if (!list) return;
  const known = new Set([...list.options].map((option) => option.value));
  for (const call of callsOf(trajectory)) {
    if (!call.name || known.has(call.name)) continue;
    known.add(call.name);
    const option = document.createElement("option");
    option.value = call.name;
    list.append(option);
  }
}

// ---- the editor of a trajectory's calls ----------------------------------------------------

/* A call the person got wrong: the message says what, `field` is the control to fix. */
export class EditError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/* The same JSON value written in any spacing; the text itself when it is no JSON. */
function canonical(textValue) {
  try {
    return JSON.stringify(JSON.parse(textValue));
  } catch {
    return textValue.trim();
  }
}

/* The calls of one trajectory as rows of fields: each call's tool name and arguments (a
   JSON object as text), a button to remove it, and what its result will be. Rows keep
   the call they came from, so saving knows which calls changed. */
export class CallEditor {
  constructor(list) {
    this.list = list; // the <ol> of rows
    this.rows = [];
    this.source = { steps: [], malformed: [] };
  }

  get empty() {
    return this.rows.length === 0;
  }

  /* Rows for every call of `trajectory`, replacing what was there. */
  load(trajectory) {
    this.source = trajectory;
    this.rows = [];
    trajectory.steps.forEach((step, index) => {
      for (const call of step.calls) this.rows.push(this.row(index, call));
    });
    this.redraw();
  }

  /* A new, empty call at the end (the trajectory's last step); its name field has focus. */
  add() {
    const row = this.row(null, null);
    this.rows.push(row);
    this.redraw();
    row.name.focus();
  }

  remove(row) {
    const at = this.rows.indexOf(row);
    this.rows.splice(at, 1);
    this.redraw();
    const next = this.rows[at] || this.rows[at - 1];
    if (next) next.args.focus();
    else this.list.closest("form").querySelector("[data-testid=call-add]").focus();
  }

  row(step, call) {
    const item = document.createElement("li");
    item.className = "call-row";
    item.dataset.testid = "call-row";
    const name = document.createElement("input");
    name.type = "text";
    name.className = "call-name";
    name.dataset.testid = "call-name";
    name.setAttribute("list", "tool-names");
    name.placeholder = "tool";
    name.autocomplete = "off";
    name.spellcheck = false;
    name.maxLength = 200;
    name.value = call ? call.name : "";
    const args = document.createElement("textarea");
    args.className = "call-arguments";
    args.dataset.testid = "call-arguments";
    args.rows = 1;
    args.spellcheck = false;
    args.maxLength = 16000;
    args.placeholder = '{"name": "value"}';
    args.value = call ? call.arguments : "{}";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small";
    remove.dataset.testid = "call-remove";
    remove.textContent = "Remove";
    const result = document.createElement("p");
    result.className = "call-result";
    result.dataset.testid = "call-result";
    item.append(name, args, remove, result);
    const row = { step, call, item, name, args, remove, result };
    for (const field of [name, args]) {
      field.addEventListener("input", () => {
        field.removeAttribute("aria-invalid");
        this.describe(row);
      });
    }
    remove.addEventListener("click", () => this.remove(row));
    return row;
  }

  redraw() {
    this.rows.forEach((row, i) => {
      const n = i + 1;
      row.name.setAttribute("aria-label", `call ${n}: tool name`);
      row.args.setAttribute("aria-label", `call ${n}: arguments (a JSON object)`);
      row.remove.setAttribute("aria-label", `remove call ${n}`);
      this.describe(row);
    });
    this.list.replaceChildren(...this.rows.map((row) => row.item));
    this.list.hidden = this.rows.length === 0;
    // with calls, the editor names its parts: the calls, then the final answer
    this.list.closest("form").classList.toggle("with-calls", this.rows.length > 0);
  }

  /* Whether the row still makes the call it came from (then its result stays). */
  unchanged(row) {
    const call = row.call;
    return Boolean(
      call &&
        row.name.value.trim() === call.name &&
        canonical(row.args.value) === canonical(call.arguments),
    );
  }

  describe(row) {
    const kept = this.unchanged(row) && row.call.result;
    const failed = Boolean(kept && kept.error);
    row.result.textContent = kept
      ? `${failed ? "✗" : "→"} ${kept.content}`
      : "→ the tool runs when you save, and its result is kept";
    row.result.classList.toggle("rerun", !kept);
    row.result.classList.toggle("error", failed);
  }

  /* The corrected steps as messages (assistant steps with `tool_calls`, the results of
     unchanged calls), without the final answer. A changed or added call goes without a
     result: the server runs the operator's tool for it (agent/corrections.py). Throws an
     EditError for a call without a name or whose arguments are no JSON object. */
  messages() {
    const steps = this.source.steps.map((step) => ({ content: step.content, rows: [] }));
    const added = { content: null, rows: [] };
    this.rows.forEach((row, i) => {
      check(row, i + 1);
      (row.step === null ? added : steps[row.step]).rows.push(row);
    });
    const out = [];
    for (const step of [...steps, added]) {
      if (!step.rows.length) continue; // every call of it removed: the step goes too
      const calls = step.rows.map((row) => {
        const call = { type: "function", function: { name: row.name.value.trim() } };
        call.function.arguments = row.args.value.trim();
        if (row.call && row.call.id) call.id = row.call.id;
        return call;
      });
      out.push({ role: "assistant", content: step.content, tool_calls: calls });
      for (const row of step.rows) {
        if (this.unchanged(row) && row.call.result) {
          out.push({ role: "tool", tool_call_id: row.call.id, content: row.call.result.content });
        }
      }
    }
    return out;
  }
}

function check(row, n) {
  const name = row.name.value.trim();
  if (!name) throw new EditError(`call ${n}: give the name of the tool it calls`, row.name);
  let value;
  try {
    value = JSON.parse(row.args.value);
  } catch (err) {
    throw new EditError(`call ${n} (${name}): the arguments are not JSON (${err.message})`, row.args);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new EditError(
      `call ${n} (${name}): the arguments must be a JSON object, like {"expression": "2 * 3"}`,
      row.args,
    );
  }
}
