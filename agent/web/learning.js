/* The Learning view: the feedback waiting, "Learn now" and the run it starts (its stage,
   progress, loss and result), the versions with their gate results (activate or roll back
   from there), and the plots of what the dashboard reports.

   A run is followed by polling GET /v1/learn/{run}; one run at a time is followed, whether
   this page started it or something else did (a trigger, the CLI, another browser).
   Test hook: `window.LEARN_OPTIONS` (default {}) is the body "Learn now" posts to
   /v1/learn, so a test can ask for e.g. {"gate": false, "max_steps": 3}. */

import { ApiError, api, guarded, showError } from "./api.js";
import { $, setActiveVersion, shortTime, sleep } from "./page.js";
import { drawApproval, drawBench, drawLosses } from "./plots.js";

const POLL_MS = 500; // a learning run's progress

const learning = {
  following: null, // the run being polled
  live: null, // {run, losses} of that run, drawn with the finished ones
  dashboard: null,
  drawn: { dashboard: "", versions: "" }, // what is on screen, to redraw only changes
};

export async function refreshLearning() {
  await Promise.all([refreshDashboard(), refreshVersions()]);
}

/* Whether a run is being followed (polled every POLL_MS) right now. */
export function isFollowing() {
  return learning.following !== null;
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
}

async function refreshVersions() {
  const versions = await api("GET", "v1/versions");
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
  if (v.gate) gate.title = JSON.stringify(v.gate, null, 1);
  const reasons = (v.gate && v.gate.reasons) || [];
  const list = document.createElement("ul");
  list.className = "reasons";
  for (const reason of reasons) {
    const li = document.createElement("li");
    li.textContent = reason;
    list.append(li);
  }
  cell(row, reasons.length ? list : "–", "reasons-cell");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.testid = "activate";
  button.dataset.version = v.id;
  button.textContent = v.active ? "active" : "Activate";
  button.disabled = Boolean(v.active);
  button.addEventListener("click", () =>
    guarded(async () => {
      const swap = await api("POST", `v1/versions/${encodeURIComponent(v.id)}/activate`, {
        why: "activated from the web page",
      });
      setActiveVersion(swap.active);
      await refreshLearning();
    }),
  );
  cell(row, button);
  return row;
}

export async function rollback() {
  const swap = await api("POST", "v1/rollback", { why: "rolled back from the web page" });
  setActiveVersion(swap.active);
  await refreshLearning();
}

export async function learnNow() {
  const button = $("learn-now");
  button.disabled = true;
  try {
    const started = await api("POST", "v1/learn", window.LEARN_OPTIONS || {});
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

/* Polls a run until it is over, showing its stage, progress and loss, then its result. */
async function follow(run) {
  if (learning.following === run) return;
  learning.following = run;
  learning.live = { run, losses: [] };
  $("learn-now").disabled = true;
  $("learn-panel").hidden = false;
  $("learn-result").hidden = true;
  $("learn-run").textContent = `Run ${run}:`;
  let failures = 0;
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
        showResult(view);
        break;
      }
      await sleep(POLL_MS);
    }
  } catch (err) {
    showError(err);
  } finally {
    learning.following = null;
    $("learn-now").disabled = false;
  }
  await refreshLearning().catch(showError);
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
  const headline = document.createElement("p");
  headline.className = "headline";
  if (view.status === "failed") {
    box.className = "learn-result result-failed";
    headline.textContent = `The run failed: ${view.error || "no reason given"}`;
  } else if (view.promoted) {
    box.className = "learn-result result-promoted";
    headline.textContent = `${view.version} promoted: it answers from your next message.`;
  } else if (view.version) {
    box.className = "learn-result result-rejected";
    headline.textContent =
      `${view.version} rejected by the gate; ` +
      "the active version stays (activate it from the table to try it anyway).";
  } else {
    box.className = "learn-result";
    headline.textContent = "The run finished without a new version.";
  }
  box.dataset.version = view.version || "";
  box.dataset.promoted = String(Boolean(view.promoted));
  box.append(headline);
  if (view.reasons && view.reasons.length) {
    const list = document.createElement("ul");
    list.className = "reasons";
    for (const reason of view.reasons) {
      const li = document.createElement("li");
      li.textContent = reason;
      list.append(li);
    }
    box.append(list);
  }
}
