/* The Learning view: the feedback waiting, "Learn now" with its settings and the run it
   starts (its stage, progress, loss, a Cancel button, then its verdict in plain words), the
   versions with their gate verdicts (activate or roll back from there), two versions'
   control answers side by side, and the plots of what the dashboard reports.

   A run is followed by polling GET /v1/learn/{run}; one run at a time is followed, whether
   this page started it or something else did (a trigger, the CLI, another browser). With no
   run to follow, the latest run's verdict is shown.

   "Learn now" posts the settings form (method, max steps, force: only what was set) to
   /v1/learn; the server checks them, and its 400 goes to the error line, nothing started.
   Test hook: `window.LEARN_OPTIONS` (default {}) is sent beneath the form's values, so a
   test can ask for e.g. {"gate": false, "sft_learning_rate": 0.01}. */

import { ApiError, api, guarded, showError } from "./api.js";
import { $, setActiveVersion, shortTime, sleep } from "./page.js";
import { drawApproval, drawBench, drawLosses } from "./plots.js";

const POLL_MS = 500; // a learning run's progress

const learning = {
  following: null, // the run being polled
  live: null, // {run, losses} of that run, drawn with the finished ones
  dashboard: null,
  versions: [], // the latest GET /v1/versions
  shown: null, // the run whose state the learn panel shows
  drawn: { dashboard: "", versions: "" }, // what is on screen, to redraw only changes
};

export async function refreshLearning() {
  await Promise.all([refreshDashboard(), refreshVersions()]);
}

/* Whether a run is being followed (polled every POLL_MS) right now. */
export function isFollowing() {
  return learning.following !== null;
}

/* The Learning view's own controls besides "Learn now" and "Roll back" (main.js wires
   those): Cancel and the compare form. */
export function wireLearning() {
  $("learn-cancel").addEventListener("click", () => guarded(cancelRun));
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(compareChosen);
  });
  $("compare-only-diff").addEventListener("change", () => {
    $("compare-table").classList.toggle("only-diff", $("compare-only-diff").checked);
  });
}

async function refreshDashboard() {
  const data = await api("GET", "v1/dashboard");
  learning.dashboard = data;
  $("feedback-waiting").textContent = String(data.feedback_waiting);
  setActiveVersion(data.active_version);
  const key = JSON.stringify([data.approval, data.runs, data.bench]);
  if (key !== learning.drawn.dashboard) {
    learning.drawn.dashboard = key;
    drawApproval($("plot-approval"), data.approval || []);
    drawLossPlot();
    $("bench-card").hidden = !data.bench;
    if (data.bench) drawBench($("plot-bench"), data.bench.points || []);
  }
  // a run started elsewhere (a trigger, the CLI): follow it here too
  if (data.running_run && learning.following === null) follow(data.running_run);
  else if (learning.shown === null && learning.following === null && data.runs.length) {
    showLatest(data.runs[data.runs.length - 1].run).catch(showError);
  }
}

/* The verdict of a run that ended before this page looked (what the last cycle did). */
async function showLatest(run) {
  learning.shown = run;
  const view = await api("GET", `v1/learn/${run}`);
  if (learning.following !== null) return; // a run started meanwhile: it shows itself
  $("learn-panel").hidden = false;
  $("learn-run").textContent = `Run ${run}:`;
  showRun(view);
  showResult(view);
}

async function refreshVersions() {
  const versions = await api("GET", "v1/versions");
  learning.versions = versions;
  const key = JSON.stringify(versions);
  if (key === learning.drawn.versions) return;
  learning.drawn.versions = key;
  const body = $("versions-body");
  body.replaceChildren();
  let active = null;
  for (const v of [...versions].reverse()) {
    if (v.active) active = v;
    body.append(versionRow(v));
  }
  const rollback = $("rollback");
  rollback.disabled = !active || active.id === "base";
  rollback.title =
    active && active.parent ? `activate ${active.parent}, the parent of ${active.id}` : "";
  if (active) setActiveVersion(active.id);
  fillComparePicks(versions, active);
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content == null ? "" : String(content);
  row.append(td);
  return td;
}

function pill(text, kind) {
  const span = document.createElement("span");
  span.className = `pill pill-${kind}`;
  span.textContent = text;
  return span;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function reasonList(reasons) {
  const list = element("ul", "reasons");
  for (const reason of reasons) list.append(element("li", "", reason));
  return list;
}

/* A gate's verdict as a person reads it: its one-line summary (else its first reason),
   with the reasons and numbers folded beneath. */
function verdict(gate) {
  const box = element("div", "verdict");
  const reasons = (gate && gate.reasons) || [];
  const summary = (gate && gate.summary) || reasons[0] || "";
  const line = element("p", "summary", summary);
  line.dataset.testid = "verdict-summary";
  box.append(line);
  const numbers = gateNumbers(gate);
  if (reasons.length || numbers.length) {
    const details = element("details", "numbers");
    details.dataset.testid = "verdict-details";
    details.append(element("summary", "", "the numbers"));
    if (reasons.length) details.append(reasonList(reasons));
    if (numbers.length) details.append(element("p", "small muted", numbers.join(" · ")));
    box.append(details);
  }
  return box;
}

/* The gate's measurements of the candidate beside the active version, where it kept them. */
function gateNumbers(gate) {
  const candidate = (gate && gate.candidate) || {};
  const active = (gate && gate.active) || {};
  const out = [];
  for (const [name, value] of Object.entries(candidate)) {
    if (typeof value !== "number") continue;
    const was = typeof active[name] === "number" ? ` (active ${round(active[name])})` : "";
    out.push(`${name.replaceAll("_", " ")} ${round(value)}${was}`);
  }
  return out;
}

const round = (v) => String(Number(v.toPrecision(4)));

function versionRow(v) {
  const row = document.createElement("tr");
  row.dataset.testid = "version-row";
  row.dataset.version = v.id;
  if (v.active) row.classList.add("active");
  const name = cell(row, v.id, "version-id");
  if (v.active) name.append(" ", pill("active", "active"));
  cell(row, v.parent || "–");
  cell(row, shortTime(v.created_at) || "–");
  cell(row, v.method || "–");
  const status = v.id === "base" ? "base model" : v.status || "–";
  const gate = cell(row, pill(status, v.status || "base"));
  gate.dataset.testid = "version-status";
  const said = cell(row, v.gate ? verdict(v.gate) : "–", "reasons-cell");
  said.dataset.testid = "version-verdict";
  for (const [testid, text] of facts(v)) {
    const line = element("p", "fact", text);
    line.dataset.testid = testid;
    said.append(line);
  }
  const actions = element("div", "row-actions");
  const button = element("button", "", v.active ? "active" : "Activate");
  button.type = "button";
  button.dataset.testid = "activate";
  button.dataset.version = v.id;
  button.disabled = Boolean(v.active || v.removed_at);
  if (v.removed_at) button.title = "its files are gone: it cannot answer again";
  button.addEventListener("click", () =>
    guarded(async () => {
      const swap = await api("POST", `v1/versions/${encodeURIComponent(v.id)}/activate`, {
        why: "activated from the web page",
      });
      setActiveVersion(swap.active);
      await refreshLearning();
    }),
  );
  actions.append(button);
  if (v.parent) {
    const compare = element("button", "", "Compare");
    compare.type = "button";
    compare.title = `${v.id}'s control answers beside ${v.parent}'s`;
    compare.dataset.testid = "compare-with-parent";
    compare.addEventListener("click", () => guarded(() => compareVersions(v.parent, v.id)));
    actions.append(compare);
  }
  cell(row, actions);
  return row;
}

/* What else a person should know of a version: retired by a forget (or its files
   removed), what its cycle cost, where it was trained from. */
function facts(v) {
  const out = [];
  if (v.retired_why) out.push(["version-retired", `retired: ${v.retired_why}`]);
  else if (v.removed_at) out.push(["version-removed", "files removed (versions rm)"]);
  const m = v.metrics || {};
  if (typeof m.cpu_seconds === "number") {
    const from = v.started_from ? `, trained further from ${v.started_from}` : "";
    const cost = `cost: ${Math.round(m.cpu_seconds)} CPU-s, ~${m.energy_wh.toFixed(2)} Wh`;
    out.push(["version-cost", cost + from]);
  }
  return out;
}

export async function rollback() {
  const swap = await api("POST", "v1/rollback", { why: "rolled back from the web page" });
  setActiveVersion(swap.active);
  await refreshLearning();
}

// ---- learning now ----------------------------------------------------------------------

/* The settings form's values, only those set: method always (the form shows one), max
   steps when filled in (sent as typed: the server says what it accepts), force when
   ticked. */
function learnSettings() {
  const settings = { method: $("learn-method").value };
  const steps = $("learn-max-steps").value.trim();
  if (steps !== "") settings.max_steps = Number(steps);
  if ($("learn-force").checked) settings.force = true;
  return settings;
}

export async function learnNow() {
  const button = $("learn-now");
  button.disabled = true;
  try {
    const body = { ...(window.LEARN_OPTIONS || {}), ...learnSettings() };
    const started = await api("POST", "v1/learn", body);
    await follow(started.run);
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) {
      // one is running already: show that one instead
      const running = (await api("GET", "v1/dashboard")).running_run;
      if (running) {
        await follow(running);
        return;
      }
    }
    throw err;
  } finally {
    button.disabled = learning.following !== null;
  }
}

/* Asks the server to stop the run being followed; following goes on until the run says
   it is over (cancelled once its trainer has stopped). */
async function cancelRun() {
  const run = learning.following;
  if (run === null) return;
  const cancel = $("learn-cancel");
  cancel.disabled = true;
  cancel.textContent = "Cancelling…";
  try {
    showRun(await api("POST", `v1/learn/${run}/cancel`, {}));
  } catch (err) {
    cancel.disabled = false;
    cancel.textContent = "Cancel";
    throw err;
  }
}

/* Polls a run until it is over, showing its stage, progress and loss, then its result. */
async function follow(run) {
  if (learning.following === run) return;
  learning.following = run;
  learning.shown = run;
  learning.live = { run, losses: [] };
  $("learn-now").disabled = true;
  $("learn-panel").hidden = false;
  $("learn-result").hidden = true;
  $("learn-run").textContent = `Run ${run}:`;
  const cancel = $("learn-cancel");
  cancel.hidden = false;
  cancel.disabled = false;
  cancel.textContent = "Cancel";
  let failures = 0;
  let last = null;
  try {
    for (;;) {
      let view;
      try {
        view = await api("GET", `v1/learn/${run}`);
        failures = 0;
      } catch (err) {
        failures += 1;
        if (failures >= 5 || (err instanceof ApiError && err.status === 404)) throw err;
        await sleep(POLL_MS);
        continue;
      }
      showRun(view);
      if (view.status !== "running") {
        last = view;
        break;
      }
      await sleep(POLL_MS);
    }
  } catch (err) {
    showError(err);
  } finally {
    learning.following = null;
    cancel.hidden = true;
    $("learn-now").disabled = false;
  }
  await refreshLearning().catch(showError);
  if (last) showResult(last); // after the refresh: the version's gate record is known
}

function showRun(view) {
  const status = $("learn-status");
  status.textContent = view.status;
  status.className = `status status-${view.status}`;
  $("learn-stage").textContent = view.stage || "";
  const bar = $("learn-progress");
  const over = view.status !== "running";
  if (over) {
    bar.max = 1;
    bar.value = view.status === "succeeded" ? 1 : 0;
    $("learn-steps").textContent = "";
  } else if (view.total) {
    bar.max = view.total;
    bar.value = Math.min(view.step || 0, view.total);
    $("learn-steps").textContent = `step ${view.step || 0}/${view.total}`;
  } else {
    bar.removeAttribute("value"); // indeterminate: loading, saving, judging
    $("learn-steps").textContent = "";
  }
  const loss = typeof view.loss === "number" ? view.loss : lastLoss(view.losses);
  $("learn-loss").textContent = loss === null ? "" : `· loss ${loss.toFixed(4)}`;
  learning.live = { run: view.run, losses: view.losses || [] };
  drawLossPlot();
}

/* The loss plot: the finished runs, and the one being followed as far as it got. */
function drawLossPlot() {
  const runs = (learning.dashboard && learning.dashboard.runs) || [];
  drawLosses($("plot-loss"), runs, learning.live);
}

function lastLoss(losses) {
  return losses && losses.length ? losses[losses.length - 1].loss : null;
}

function showResult(view) {
  const box = $("learn-result");
  box.replaceChildren();
  box.hidden = false;
  const headline = element("p", "headline");
  if (view.status === "failed") {
    box.className = "learn-result result-failed";
    headline.textContent = `The run failed: ${view.error || "no reason given"}`;
  } else if (view.status === "cancelled") {
    box.className = "learn-result result-cancelled";
    headline.textContent = `Run ${view.run} was cancelled: the active version stays.`;
  } else if (view.promoted) {
    box.className = "learn-result result-promoted";
    headline.textContent = `${view.version} promoted: it answers from your next message.`;
  } else if (view.version) {
    box.className = "learn-result result-rejected";
    headline.textContent =
      `${view.version} not promoted; ` +
      "the active version stays (activate it from the table to try it anyway).";
  } else {
    box.className = "learn-result";
    headline.textContent = "The run finished without a new version.";
  }
  box.dataset.version = view.version || "";
  box.dataset.promoted = String(Boolean(view.promoted));
  box.append(headline);
  const known = learning.versions.find((v) => v.id === view.version);
  const gate = (known && known.gate) || {};
  if (view.version || (view.reasons && view.reasons.length)) {
    const reasons = view.reasons && view.reasons.length ? view.reasons : gate.reasons || [];
    const shown = verdict({ ...gate, reasons, summary: view.summary || gate.summary });
    shown.querySelector(".summary").dataset.testid = "learn-summary";
    box.append(shown);
  }
  for (const line of cappedLines(view.quality)) {
    const p = element("p", "capped", line);
    p.dataset.testid = "learn-capped";
    box.append(p);
  }
}

/* What the per-user cap left out of a run's data, one line per user. */
function cappedLines(quality) {
  const capped = (quality && quality.capped) || {};
  const share = quality && quality.max_user_share;
  const most = share === 0.5 ? "half" : typeof share === "number" ? `${Math.round(share * 100)}%` : "a set share";
  return Object.entries(capped)
    .filter(([, n]) => n > 0)
    .map(
      ([user, n]) =>
        `${n} of ${user}'s items not used: one user may give at most ${most} of the feedback.`,
    );
}

// ---- two versions side by side ---------------------------------------------------------

/* The compare form's choices: every version; kept as the person set them, else the active
   version ("after") beside its parent ("before"), or the newest version when the base
   model is active. */
function fillComparePicks(versions, active) {
  const a = $("compare-a");
  const b = $("compare-b");
  const chosen = [a.value, b.value];
  for (const select of [a, b]) {
    select.replaceChildren();
    for (const v of versions) {
      const option = element("option", "", v.id === "base" ? "base" : v.id);
      option.value = v.id;
      select.append(option);
    }
  }
  const ids = versions.map((v) => v.id);
  const newest = versions[versions.length - 1];
  const after = active && active.parent ? active : newest;
  const defaults = [(after && after.parent) || "base", (after && after.id) || "base"];
  a.value = ids.includes(chosen[0]) ? chosen[0] : defaults[0];
  b.value = ids.includes(chosen[1]) ? chosen[1] : defaults[1];
  $("compare-go").disabled = versions.length < 2;
}

async function compareChosen() {
  await compareVersions($("compare-a").value, $("compare-b").value);
}

/* Fetches and shows versions a and b's control answers in two columns. */
async function compareVersions(a, b) {
  $("compare-a").value = a;
  $("compare-b").value = b;
  const query = new URLSearchParams({ a, b });
  const data = await api("GET", `v1/versions/compare?${query}`);
  showComparison(data);
  $("compare-card").scrollIntoView({ block: "nearest" });
}

function showComparison(data) {
  const { a, b, counts } = data;
  $("compare-result").hidden = false;
  $("compare-summary").textContent =
    `${a.version}: ${a.correct} of ${a.answered} control answers correct · ` +
    `${b.version}: ${b.correct} of ${b.answered} · ${counts.differ} of ${counts.prompts} ` +
    `answers differ (${counts.fixed} now correct, ${counts.broken} no longer correct)`;
  $("compare-head-a").textContent = a.version;
  $("compare-head-b").textContent = b.version;
  const body = $("compare-body");
  body.replaceChildren();
  for (const p of data.prompts) {
    const row = document.createElement("tr");
    row.dataset.testid = "compare-row";
    row.dataset.differs = String(p.differs);
    if (p.differs) row.classList.add("differs");
    const prompt = cell(row, p.prompt, "compare-prompt");
    if (p.differs) prompt.append(" ", pill("differs", "differs"));
    if (p.expect) prompt.append(element("div", "small muted", `a correct answer says “${p.expect}”`));
    answerCell(row, p.a).dataset.testid = "compare-a-answer";
    answerCell(row, p.b).dataset.testid = "compare-b-answer";
    body.append(row);
  }
}

function answerCell(row, side) {
  if (!side) return cell(row, "(not asked)", "muted");
  const td = cell(row, "", side.correct ? "answer correct" : "answer wrong");
  const mark = element("span", "mark", side.correct ? "✓" : "✗");
  mark.title = side.correct ? "correct" : "not correct";
  td.append(mark, " ", element("span", "answer-body", side.answer));
  td.dataset.correct = String(side.correct);
  return td;
}
