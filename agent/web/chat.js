/* The chat: the threads, the conversation shown, answers streamed in, and each answer's
   feedback tools (👍, 👎, a better answer, regenerate).

   An answer streams from POST /v1/chat/completions; the turn, version and thread it belongs
   to come in its headers and chunks. Each TurnView keeps the turn id it shows, so feedback
   and regeneration always name the answer on screen. */

import {
  ApiError,
  api,
  guarded,
  messageOf,
  readEvents,
  readJson,
  request,
  showError,
} from "./api.js";
import { $, setActiveVersion, shortTime } from "./page.js";

const MODEL = "learnloop"; // the API's alias for "whichever version is active"

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

export async function send() {
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

export function newChat() {
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

export async function loadThreads() {
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
