/* learnloop's web page: a chat that collects feedback, and a view of the learning it feeds.

   Plain browser JavaScript, no build step and no libraries: the page talks to the server's
   JSON API (see agent/server/app.py) with relative URLs, reads streamed answers from the
   OpenAI-style SSE response with fetch + a body reader (EventSource cannot POST), and draws
   its plots as inline SVG.

   A server off loopback answers only requests with an API key: on a 401 the page asks for
   one and keeps it in this browser's localStorage (sent as `Authorization: Bearer KEY`)
   until "Forget API key".

   Test hook: `window.LEARN_OPTIONS` (default {}) is the body "Learn now" posts to
   /v1/learn, so a test can ask for e.g. {"gate": false, "max_steps": 3}. */
"use strict";

(() => {
  const MODEL = "learnloop"; // the API's alias for "whichever version is active"
  const POLL_MS = 500; // a learning run's progress
  const REFRESH_MS = 5000; // the Learning view otherwise
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d"];

  window.LEARN_OPTIONS = window.LEARN_OPTIONS || {};

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- the API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function readJson(response) {
    const text = await response.text();
    try {
      return text ? JSON.parse(text) : null;
    } catch {
      return { error: { message: text.slice(0, 300) } };
    }
  }

  function messageOf(data, response) {
    const message = data && data.error && data.error.message;
    return message || `${response.status} ${response.statusText || "error"}`;
  }

  const KEY_ITEM = "learnloop.apiKey"; // localStorage: the API key this browser sends

  function savedKey() {
    try {
      return localStorage.getItem(KEY_ITEM) || "";
    } catch {
      return ""; // storage disabled: the page works on loopback, where no key is needed
    }
  }

  /* Shows the key form after a 401; a key the server refused is forgotten. */
  function askForKey(refused) {
    if (refused) localStorage.removeItem(KEY_ITEM);
    $("key-refused").hidden = !refused;
    $("key-forget").hidden = true;
    $("key-form").hidden = false;
    $("key-input").focus();
  }

  async function request(method, path, body) {
    const init = { method, headers: {} };
    const key = savedKey();
    if (key) init.headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(`cannot reach the learnloop server (${err.message})`, 0);
    }
    if (response.status === 401) askForKey(Boolean(key));
    return response;
  }

  async function api(method, path, body) {
    const response = await request(method, path, body);
    const data = await readJson(response);
    if (!response.ok) throw new ApiError(messageOf(data, response), response.status);
    return data;
  }

  /* Calls onEvent with each `data:` payload of a server-sent event stream, parsed as JSON,
     until `[DONE]` or the end of the body. */
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      buffer = buffer.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") {
          reader.cancel().catch(() => {});
          return;
        }
        onEvent(JSON.parse(data));
      }
      if (done) return;
    }
  }

  // ---- the error line ------------------------------------------------------------------

  function showError(err) {
    if (err instanceof ApiError && err.status === 401) return; // the key form says it
    $("error-text").textContent = err instanceof Error ? err.message : String(err);
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  /* Runs an action started by the user; its failure goes to the error line. */
  async function guarded(action) {
    clearError();
    try {
      return await action();
    } catch (err) {
      showError(err);
      return undefined;
    }
  }

  function setActiveVersion(version) {
    if (version) {
      $("active-version").textContent = version;
      $("dash-active").textContent = version;
    }
  }

  // ---- tabs ----------------------------------------------------------------------------

  function showView(name) {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      const selected = tab.dataset.view === name;
      tab.setAttribute("aria-selected", String(selected));
      $(`view-${tab.dataset.view}`).hidden = !selected;
    }
    if (name === "learning") {
      guarded(refreshLearning);
      if (location.hash !== "#learning") history.replaceState(null, "", "#learning");
    } else {
      if (location.hash) history.replaceState(null, "", location.pathname + location.search);
      $("message-input").focus();
    }
  }

  // ---- chat ----------------------------------------------------------------------------

  const chat = {
    threadId: null, // the stored thread new messages continue; null: the next starts one
    epoch: 0, // bumped when the conversation shown changes, so late answers stay put
    busy: false,
  };

  function setBusy(busy) {
    chat.busy = busy;
    $("send").disabled = busy;
    for (const button of document.querySelectorAll("[data-testid=regen]")) {
      button.disabled = busy || !button.closest(".turn").dataset.turnId;
    }
  }

  /* One exchange on screen: the user's message and the answer, with its feedback tools. */
  class TurnView {
    constructor(userText) {
      this.el = $("turn-template").content.firstElementChild.cloneNode(true);
      this.part = (id) => this.el.querySelector(`[data-testid=${id}]`);
      this.part("user-message").textContent = userText;
      this.answer = this.part("answer");
      this.turnId = null;
      for (const rating of ["up", "down"]) {
        this.part(`thumb-${rating}`).addEventListener("click", () => this.rate(rating));
      }
      this.part("correct").addEventListener("click", () => this.toggleCorrection());
      this.part("correction-cancel").addEventListener("click", () => this.toggleCorrection(false));
      this.part("correction-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.submitCorrection();
      });
      this.part("correction-input").addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.submitCorrection();
      });
      this.part("regen").addEventListener("click", () => this.regenerate());
      $("welcome").hidden = true;
      $("messages").append(this.el);
    }

    begin() {
      this.turnId = null;
      delete this.el.dataset.turnId;
      this.answer.textContent = "";
      this.answer.classList.add("streaming");
      this.answer.classList.remove("failed");
      this.part("version-badge").textContent = "";
      this.note("");
      this.setTools(false);
      this.showFeedback(null);
      this.toggleCorrection(false);
    }

    identify(turnId, version) {
      if (turnId) {
        this.turnId = turnId;
        this.el.dataset.turnId = String(turnId);
      }
      if (version) {
        this.part("version-badge").textContent = version;
        this.el.dataset.version = version;
      }
    }

    append(text) {
      this.answer.append(text);
      scrollToEnd();
    }

    finish(finishReason) {
      this.answer.classList.remove("streaming");
      if (finishReason === "length") this.note("(cut off at the length limit)");
      this.setTools(Boolean(this.turnId));
    }

    fail(message) {
      this.answer.classList.remove("streaming");
      this.answer.classList.add("failed");
      if (!this.answer.textContent) this.answer.textContent = `(no answer: ${message})`;
      this.setTools(Boolean(this.turnId));
    }

    setTools(enabled) {
      for (const id of ["thumb-up", "thumb-down", "correct"]) this.part(id).disabled = !enabled;
      this.part("regen").disabled = !enabled || chat.busy;
    }

    note(text) {
      this.part("feedback-note").textContent = text;
    }

    showFeedback(rating) {
      this.part("thumb-up").setAttribute("aria-pressed", String(rating === "up"));
      this.part("thumb-down").setAttribute("aria-pressed", String(rating === "down"));
    }

    toggleCorrection(open) {
      const form = this.part("correction-form");
      form.hidden = open === undefined ? !form.hidden : !open;
      if (!form.hidden) {
        const input = this.part("correction-input");
        if (!input.value) input.value = this.answer.textContent;
        input.focus();
        input.select();
      }
    }

    async sendFeedback(rating, correction) {
      const body = { turn_id: this.turnId, rating };
      if (correction !== undefined) body.correction = correction;
      const result = await api("POST", "v1/feedback", body);
      this.showFeedback(rating);
      let note = correction !== undefined ? "thanks: your answer will be learned from" : "thanks";
      if (result.learning_started) {
        note += ` · learning started (${result.learning_started}); see the Learning tab`;
      }
      this.note(note);
      return result;
    }

    rate(rating) {
      return guarded(() => this.sendFeedback(rating));
    }

    submitCorrection() {
      const text = this.part("correction-input").value.trim();
      if (!text) {
        showError("write the better answer first");
        return undefined;
      }
      return guarded(async () => {
        await this.sendFeedback("down", text);
        this.toggleCorrection(false);
        this.el.classList.add("corrected");
      });
    }

    regenerate() {
      if (!this.turnId || chat.busy) return undefined;
      const previous = this.turnId;
      return guarded(() =>
        streamInto(this, { model: MODEL, messages: [], stream: true, regen_of: previous }),
      );
    }

    /* A turn as the thread history holds it. */
    load(turn) {
      this.identify(turn.turn_id, turn.version);
      this.answer.textContent = turn.answer || "";
      const feedback = Array.isArray(turn.feedback)
        ? turn.feedback[turn.feedback.length - 1]
        : turn.feedback;
      if (feedback) {
        this.showFeedback(feedback.rating);
        if (feedback.correction) {
          this.el.classList.add("corrected");
          this.part("correction-input").value = feedback.correction;
          this.note("corrected");
        }
      }
      if (turn.interrupted) this.note("(interrupted)");
      this.setTools(true);
    }
  }

  function scrollToEnd() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  /* Streams one answer into `view` and leaves the turn, version and thread it names. */
  async function streamInto(view, body) {
    const epoch = chat.epoch;
    setBusy(true);
    view.begin();
    try {
      const response = await request("POST", "v1/chat/completions", body);
      if (!response.ok) {
        throw new ApiError(messageOf(await readJson(response), response), response.status);
      }
      const headers = response.headers;
      view.identify(
        Number(headers.get("X-Learnloop-Turn-Id")) || null,
        headers.get("X-Learnloop-Version"),
      );
      let threadId = headers.get("X-Learnloop-Thread-Id");
      let finishReason = null;
      await readEvents(response.body, (chunk) => {
        if (chunk.error) throw new ApiError(chunk.error.message || "the answer failed", 500);
        view.identify(chunk.turn_id, chunk.version);
        threadId = chunk.thread_id || threadId;
        const choice = (chunk.choices || [])[0];
        if (!choice) return;
        if (choice.delta && choice.delta.content) view.append(choice.delta.content);
        if (choice.finish_reason) finishReason = choice.finish_reason;
      });
      view.finish(finishReason);
      if (view.el.dataset.version) setActiveVersion(view.el.dataset.version);
      if (epoch === chat.epoch && threadId) {
        chat.threadId = threadId;
        await loadThreads(); // a new thread, or one more turn in this one
      }
    } catch (err) {
      view.fail(err.message);
      throw err;
    } finally {
      setBusy(false);
    }
  }

  async function send() {
    const input = $("message-input");
    const text = input.value.trim();
    if (!text || chat.busy) return;
    input.value = "";
    const view = new TurnView(text);
    const body = { model: MODEL, messages: [{ role: "user", content: text }], stream: true };
    if (chat.threadId) body.thread_id = chat.threadId;
    await guarded(() => streamInto(view, body));
    input.focus();
  }

  function clearConversation() {
    chat.epoch += 1;
    for (const turn of document.querySelectorAll("#messages .turn")) turn.remove();
    $("welcome").hidden = false;
  }

  function newChat() {
    clearConversation();
    chat.threadId = null;
    markCurrentThread();
    $("message-input").focus();
  }

  async function openThread(id) {
    const thread = await api("GET", `v1/threads/${encodeURIComponent(id)}`);
    clearConversation();
    chat.threadId = thread.id;
    for (const turn of thread.turns) new TurnView(turn.user_message).load(turn);
    markCurrentThread();
    scrollToEnd();
  }

  function markCurrentThread() {
    for (const item of document.querySelectorAll("#thread-list [data-thread-id]")) {
      const current = item.dataset.threadId === chat.threadId;
      item.classList.toggle("current", current);
      item.setAttribute("aria-current", current ? "true" : "false");
    }
  }

  function shortTime(value) {
    return value ? String(value).replace("T", " ").slice(0, 16) : "";
  }

  async function loadThreads() {
    const threads = await api("GET", "v1/threads");
    const list = $("thread-list");
    list.replaceChildren();
    for (const thread of threads) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thread";
      button.dataset.testid = "thread-item";
      button.dataset.threadId = thread.id;
      const title = document.createElement("span");
      title.className = "thread-title";
      title.textContent = thread.title || "(empty)";
      const meta = document.createElement("span");
      meta.className = "thread-meta";
      const n = thread.turns;
      meta.textContent = `${n} turn${n === 1 ? "" : "s"} · ${shortTime(thread.last_at || thread.created_at)}`;
      button.append(title, meta);
      button.addEventListener("click", () => guarded(() => openThread(thread.id)));
      item.append(button);
      list.append(item);
    }
    $("thread-empty").hidden = threads.length > 0;
    markCurrentThread();
  }

  // ---- learning ------------------------------------------------------------------------

  const learning = {
    following: null, // the run being polled
    live: null, // {run, losses} of that run, drawn with the finished ones
    dashboard: null,
    drawn: { dashboard: "", versions: "" }, // what is on screen, to redraw only changes
  };

  async function refreshLearning() {
    await Promise.all([refreshDashboard(), refreshVersions()]);
  }

  async function refreshDashboard() {
    const data = await api("GET", "v1/dashboard");
    learning.dashboard = data;
    $("feedback-waiting").textContent = String(data.feedback_waiting);
    setActiveVersion(data.active_version);
    const key = JSON.stringify([data.approval, data.runs, data.bench]);
    if (key !== learning.drawn.dashboard) {
      learning.drawn.dashboard = key;
      drawApproval(data.approval || []);
      drawLosses();
      $("bench-card").hidden = !data.bench;
      if (data.bench) drawBench(data.bench.points || []);
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

  async function rollback() {
    const swap = await api("POST", "v1/rollback", { why: "rolled back from the web page" });
    setActiveVersion(swap.active);
    await refreshLearning();
  }

  async function learnNow() {
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
    drawLosses();
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

  // ---- plots (inline SVG) --------------------------------------------------------------

  const PLOT = { width: 400, height: 260, left: 52, right: 14, top: 18, bottom: 48 };

  function svg(tag, attrs = {}, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function emptyPlot(container, message) {
    const p = document.createElement("p");
    p.className = "plot-empty muted";
    p.textContent = message;
    container.replaceChildren(p);
  }

  /* Round tick values covering [lo, hi]. */
  function ticks(lo, hi, count = 5) {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / count;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  /* An empty chart: frame, grid, y ticks, axis labels; returns the svg and its scales. */
  function frame(container, { title, xLabel, yLabel, yMin, yMax, yFormat }) {
    const { width, height, left, right, top, bottom } = PLOT;
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      class: "chart",
      role: "img",
      "aria-label": title,
    });
    root.append(svg("title", {}, title));
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const y = (v) => top + plotH - ((v - yMin) / (yMax - yMin || 1)) * plotH;
    const axes = svg("g", { class: "axes" });
    for (const t of ticks(yMin, yMax)) {
      axes.append(svg("line", { x1: left, x2: left + plotW, y1: y(t), y2: y(t), class: "grid" }));
      axes.append(
        svg("text", { x: left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, yFormat(t)),
      );
    }
    axes.append(svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }));
    axes.append(
      svg("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, class: "axis" }),
    );
    axes.append(
      svg("text", { x: left + plotW / 2, y: height - 6, class: "axis-label x-label" }, xLabel),
    );
    axes.append(
      svg(
        "text",
        {
          x: -(top + plotH / 2),
          y: 14,
          transform: "rotate(-90)",
          class: "axis-label y-label",
        },
        yLabel,
      ),
    );
    root.append(axes);
    container.replaceChildren(root);
    return { root, y, left, top, plotW, plotH };
  }

  const percent = (v) => `${Math.round(v * 100)}%`;

  function drawApproval(rows) {
    const container = $("plot-approval");
    if (!rows.length) {
      emptyPlot(container, "No rated answers yet.");
      return;
    }
    const chart = frame(container, {
      title: "Approval rate per version",
      xLabel: "version",
      yLabel: "share of thumbs-up",
      yMin: 0,
      yMax: 1,
      yFormat: percent,
    });
    const slot = chart.plotW / rows.length;
    const barW = Math.min(64, slot * 0.6);
    rows.forEach((row, i) => {
      const cx = chart.left + slot * (i + 0.5);
      const top = chart.y(row.rate);
      const bottom = chart.y(0);
      const bar = svg("rect", {
        x: cx - barW / 2,
        y: top,
        width: barW,
        height: Math.max(bottom - top, 0.5),
        class: "bar",
        fill: COLORS[i % COLORS.length],
        "data-version": row.version,
      });
      bar.append(svg("title", {}, `${row.version}: ${row.up} up, ${row.down} down`));
      chart.root.append(bar);
      const label = `${percent(row.rate)} (${row.up}/${row.up + row.down})`;
      chart.root.append(svg("text", { x: cx, y: top - 5, class: "value" }, label));
      chart.root.append(svg("text", { x: cx, y: bottom + 16, class: "tick category" }, row.version));
    });
  }

  /* Lines on shared axes: series = [{name, points: [{x, y}]}]. */
  function drawLines(container, series, options) {
    const all = series.flatMap((s) => s.points);
    const xs = all.map((p) => p.x);
    const ys = all.map((p) => p.y);
    let xMin = Math.min(...xs);
    let xMax = Math.max(...xs);
    if (xMax === xMin) {
      xMin = xMin >= 0 ? Math.max(0, xMin - 1) : xMin - 1;
      xMax += 1;
    }
    let yMin = options.yMin ?? Math.min(...ys);
    let yMax = options.yMax ?? Math.max(...ys);
    if (yMax === yMin) {
      yMin -= 0.5;
      yMax += 0.5;
    }
    // round the free ends out to tick values
    const yTicks = ticks(yMin, yMax);
    const stepY = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
    if (options.yMin === undefined) yMin = Math.floor(yMin / stepY) * stepY;
    if (options.yMax === undefined) yMax = Math.ceil(yMax / stepY) * stepY;
    const chart = frame(container, { ...options, yMin, yMax });
    const x = (v) => chart.left + ((v - xMin) / (xMax - xMin)) * chart.plotW;
    const base = chart.top + chart.plotH;
    const xTicks = ticks(xMin, xMax, 6).filter((t) => !options.integerX || Number.isInteger(t));
    for (const t of xTicks) {
      chart.root.append(svg("line", { x1: x(t), x2: x(t), y1: base, y2: base + 4, class: "axis" }));
      chart.root.append(svg("text", { x: x(t), y: base + 16, class: "tick category" }, String(t)));
    }
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const group = svg("g", { class: "series", "data-name": s.name });
      const d = s.points
        .map((p, j) => `${j ? "L" : "M"}${x(p.x).toFixed(1)},${chart.y(p.y).toFixed(1)}`)
        .join(" ");
      group.append(svg("path", { d, class: "line", stroke: color, fill: "none" }));
      if (s.points.length <= 40) {
        for (const p of s.points) {
          const dot = svg("circle", { cx: x(p.x), cy: chart.y(p.y), r: 3, fill: color, class: "dot" });
          dot.append(svg("title", {}, p.label || `${s.name}: ${options.yFormat(p.y)} at ${p.x}`));
          group.append(dot);
        }
      }
      chart.root.append(group);
    });
    if (series.length > 1 || options.legend) {
      const legend = svg("g", { class: "legend" });
      series.forEach((s, i) => {
        const lx = chart.left + chart.plotW - 8;
        const ly = chart.top + 6 + i * 16;
        const color = s.color || COLORS[i % COLORS.length];
        legend.append(svg("rect", { x: lx - 10, y: ly - 5, width: 10, height: 10, fill: color }));
        legend.append(svg("text", { x: lx - 14, y: ly + 4, class: "legend-text" }, s.name));
      });
      chart.root.append(legend);
    }
    return chart;
  }

  function drawLosses() {
    const container = $("plot-loss");
    const runs = ((learning.dashboard && learning.dashboard.runs) || []).map((r) => ({ ...r }));
    const live = learning.live;
    if (live && live.losses.length) {
      const known = runs.find((r) => r.run === live.run);
      if (known) {
        if (live.losses.length >= (known.losses || []).length) known.losses = live.losses;
      } else {
        runs.push({ run: live.run, version: null, status: "running", losses: live.losses });
      }
    }
    const series = runs
      .filter((r) => r.losses && r.losses.length)
      .sort((a, b) => a.run - b.run)
      .slice(-COLORS.length)
      .map((r) => ({
        name: `run ${r.run}${r.version ? ` → ${r.version}` : ""}`,
        points: r.losses.map((l) => ({ x: l.step, y: l.loss })),
      }));
    if (!series.length) {
      emptyPlot(container, "No training runs yet.");
      return;
    }
    drawLines(container, series, {
      title: "Training loss per run",
      xLabel: "training step",
      yLabel: "loss",
      yFormat: (v) => String(Number(v.toPrecision(3))),
      integerX: true,
      legend: true,
    });
  }

  function drawBench(points) {
    const container = $("plot-bench");
    if (!points.length) {
      emptyPlot(container, "The benchmark has no points.");
      return;
    }
    const chart = drawLines(
      container,
      [
        {
          name: "accuracy",
          points: points.map((p) => ({
            x: p.interactions,
            y: p.accuracy,
            label: `${p.version}: ${percent(p.accuracy)} after ${p.interactions} interactions`,
          })),
        },
      ],
      {
        title: "Benchmark accuracy",
        xLabel: "interactions (feedback given)",
        yLabel: "accuracy",
        yMin: 0,
        yMax: 1,
        yFormat: percent,
      },
    );
    return chart;
  }

  // ---- wiring --------------------------------------------------------------------------

  function start() {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => showView(tab.dataset.view));
    }
    $("error-close").addEventListener("click", clearError);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      localStorage.setItem(KEY_ITEM, $("key-input").value.trim());
      location.reload(); // every view starts again, now with the key
    });
    $("key-forget").hidden = !savedKey();
    $("key-forget").addEventListener("click", () => {
      localStorage.removeItem(KEY_ITEM);
      location.reload();
    });
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    $("message-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    $("new-chat").addEventListener("click", newChat);
    $("learn-now").addEventListener("click", () => guarded(learnNow));
    $("rollback").addEventListener("click", () => guarded(rollback));
    guarded(async () => {
      const health = await api("GET", "healthz");
      setActiveVersion(health.active_version);
      await loadThreads();
    });
    showView(location.hash === "#learning" ? "learning" : "chat");
    // keep the Learning view current while it is open (feedback from other clients, runs
    // that triggers start); a run being followed is polled faster by follow()
    setInterval(() => {
      if (!$("view-learning").hidden && !document.hidden && learning.following === null) {
        refreshLearning().catch(() => {}); // a transient failure: the next tick retries
      }
    }, REFRESH_MS);
    document.body.dataset.ready = "true";
  }

  start();
})();
