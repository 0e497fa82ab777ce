/* learnloop's web page: a chat that collects feedback, and a view of the learning it feeds.

   Plain browser JavaScript as native ES modules, no build step and no libraries; the page
   talks to the server's JSON API (see agent/server/app.py) with relative URLs. The parts:

     page.js      shared DOM helpers (imports nothing)
     api.js       requests, the API key, streamed events, the error line
     chat.js      turns, streaming answers, feedback buttons
     threads.js   the thread list: search, rename, delete
     steps.js     a turn's tool calls folded under its answer, and their editor
     markdown.js  answers rendered as markdown, as DOM nodes (never the model's HTML)
     learning.js  the Learning view: "Learn now", the run it follows, the versions
     plots.js     the Learning view's SVG plots
     main.js      this file: the tabs and the wiring of the page's controls

   A module script runs once the document is parsed, as a deferred script does; the page
   sets `body[data-ready=true]` once its controls are wired. The test hook
   `window.LEARN_OPTIONS` gets its default ({}) here; learning.js says what it does. */

import { api, clearError, forgetKey, guarded, saveKey, savedKey } from "./api.js";
import { newChat, send, stop } from "./chat.js";
import { isFollowing, learnNow, refreshLearning, rollback, wireLearning } from "./learning.js";
import { $, setActiveVersion } from "./page.js";
import { loadThreads, searchSoon, showThreads } from "./threads.js";

const REFRESH_MS = 5000; // the Learning view, while no run is being followed

window.LEARN_OPTIONS = window.LEARN_OPTIONS || {};

// ---- tabs ------------------------------------------------------------------------------

function showView(name) {
  document.body.dataset.view = name;
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

// ---- wiring ----------------------------------------------------------------------------

function start() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("error-close").addEventListener("click", clearError);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey($("key-input").value.trim());
    location.reload(); // every view starts again, now with the key
  });
  $("key-forget").hidden = !savedKey();
  $("key-forget").addEventListener("click", () => {
    forgetKey();
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
  $("stop").addEventListener("click", stop);
  $("threads-toggle").addEventListener("click", () => {
    if ($("view-chat").hidden) showView("chat");
    showThreads();
  });
  $("thread-search").addEventListener("input", searchSoon);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") showThreads(false); // the thread panel of a narrow screen
  });
  $("learn-now").addEventListener("click", () => guarded(learnNow));
  $("rollback").addEventListener("click", () => guarded(rollback));
  wireLearning(); // Cancel, the compare form
  guarded(async () => {
    const status = await api("GET", "v1/status"); // /healthz says only "ok"
    setActiveVersion(status.active_version);
    await loadThreads();
  });
  showView(location.hash === "#learning" ? "learning" : "chat");
  // keep the Learning view current while it is open (feedback from other clients, runs
  // that triggers start); a run being followed is polled faster by follow()
  setInterval(() => {
    if (!$("view-learning").hidden && !document.hidden && !isFollowing()) {
      refreshLearning().catch(() => {}); // a transient failure: the next tick retries
    }
  }, REFRESH_MS);
  document.body.dataset.ready = "true";
}

start();
