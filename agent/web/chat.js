/* The chat: the conversation shown (a thread from the list in threads.js), answers
   streamed in (and stopped), and each answer's feedback tools (👍, 👎, a better answer,
   regenerate).

   An answer streams from POST /v1/chat/completions; the turn, version and thread it belongs
   to come in its headers and chunks. A TurnView is one user message with every answer it
   has had: regenerating adds an answer beside the others ("‹ 2/2 ›") and keeps the rated
   one. Each answer keeps its own turn id, so feedback always names the answer on screen.
   The conversation continues from the newest answer (the server's thread history).

   Answers stream in as plain text and are rendered as markdown (markdown.js: DOM nodes,
   never HTML from the model) once complete. The tools an answer called are folded under
   it (steps.js): shown live from the stream's `learnloop_step` chunks, then as the turn
   logged them (the last chunk's `learnloop_steps`, the thread view's `steps`). "Write a
   better answer" corrects the final answer and the calls the turn made or should have
   made; with calls, it is sent as a corrected trajectory (`correction_messages`). */

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
import { renderMarkdown } from "./markdown.js";
import { $, setActiveVersion, sleep } from "./page.js";
import {
  CallEditor,
  EditError,
  addLiveStep,
  fromMessages,
  fromSteps,
  renderFold,
  renderLines,
} from "./steps.js";
import { loadThreads, markCurrentThread, showThreads, wireThreads } from "./threads.js";

const MODEL = "learnloop"; // the API's alias for "whichever version is active"
const STOP_WAIT_MS = 10_000; // a stopped answer: how long to wait for the server to log it

const chat = {
  threadId: null, // the stored thread new messages continue; null: the next starts one
  epoch: 0, // bumped when the conversation shown changes, so late answers stay put
  busy: false,
  controller: null, // aborts the answer streaming now (the Stop button)
};

/* Test hook: extra fields for every chat request (e.g. {max_tokens: 2000}). */
window.CHAT_OPTIONS = window.CHAT_OPTIONS || {};

function setBusy(busy) {
  chat.busy = busy;
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  for (const turn of document.querySelectorAll("#messages .turn")) turn.view?.setTools();
}

/* One answer to a user message: the turn that holds it and what the page knows of it. */
function entryOf(turn) {
  const feedback = Array.isArray(turn.feedback)
    ? turn.feedback[turn.feedback.length - 1]
    : turn.feedback;
  return {
    turnId: turn.turn_id,
    threadId: turn.thread_id || null,
    version: turn.version,
    text: turn.answer || "",
    steps: turn.steps || [], // step_view's shape: its tool calls and results
    rating: feedback ? feedback.rating : null,
    correction: (feedback && feedback.correction) || null,
    correctionMessages: (feedback && feedback.correction_messages) || null,
    stopped: Boolean(turn.interrupted), // stopped while it streamed (or Ctrl-C in a terminal)
    note: feedback ? useOf(feedback) : "",
  };
}

/* What learning did with a feedback item, said where it was given. */
function useOf(feedback) {
  if (!feedback.used_by) return "";
  return feedback.kept_aside
    ? `kept aside to test ${feedback.used_by}, not trained on (it judges new versions)`
    : `learned by ${feedback.used_by}`;
}

/* One exchange on screen: the user's message and its answers, with their feedback tools. */
class TurnView {
  constructor(userText) {
    this.el = $("turn-template").content.firstElementChild.cloneNode(true);
    this.el.view = this;
    this.part = (id) => this.el.querySelector(`[data-testid=${id}]`);
    this.part("user-message").textContent = userText;
    this.answer = this.part("answer");
    this.answers = []; // every answer to this message, oldest first
    this.index = -1; // the one shown
    this.streaming = null; // the answer streaming in, if any
    this.saving = false; // a correction is on its way to the server
    for (const rating of ["up", "down"]) {
      this.part(`thumb-${rating}`).addEventListener("click", () => this.rate(rating));
    }
    this.part("correct").addEventListener("click", () => this.toggleCorrection());
    this.part("correction-cancel").addEventListener("click", () => this.toggleCorrection(false));
    this.part("correction-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submitCorrection();
    });
    this.part("correction-form").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.submitCorrection();
      }
    });
    this.calls = new CallEditor(this.part("call-rows"));
    this.part("call-add").addEventListener("click", () => this.calls.add());
    this.part("regen").addEventListener("click", () => this.regenerate());
    this.part("prev-answer").addEventListener("click", () => this.show(this.index - 1));
    this.part("next-answer").addEventListener("click", () => this.show(this.index + 1));
    $("welcome").hidden = true;
    $("messages").append(this.el);
  }

  get shown() {
    return this.answers[this.index] || null;
  }

  /* A new answer, streaming in from now on; it is the one shown. */
  begin() {
    const entry = { turnId: null, version: null, text: "", rating: null, correction: null };
    Object.assign(entry, { threadId: null, steps: [], correctionMessages: null });
    Object.assign(entry, { stopped: false, note: "" });
    this.answers.push(entry);
    this.streaming = entry;
    this.toggleCorrection(false);
    this.show(this.answers.length - 1);
    return entry;
  }

  identify(entry, turnId, version) {
    if (turnId) entry.turnId = turnId;
    if (version) entry.version = version;
    if (entry === this.shown) this.showIds(entry);
  }

  /* A tool call or result of the answer streaming in (a `learnloop_step` chunk): shown
     in its fold, which stays open while the answer streams. */
  step(entry, event) {
    addLiveStep(entry.steps, event);
    if (entry === this.shown) renderFold(this.part("steps"), fromSteps(entry.steps), true);
    scrollToEnd();
  }

  /* The answer's steps as the turn logged them (the last chunk's `learnloop_steps`),
     in place of those gathered live; the fold stays as the person left it. */
  logged(entry, steps) {
    entry.steps = steps;
    if (entry === this.shown) renderFold(this.part("steps"), fromSteps(entry.steps));
  }

  append(entry, text) {
    entry.text += text;
    if (entry === this.shown) this.answer.append(text); // plain text while it streams
    scrollToEnd();
  }

  /* The streaming answer is complete ("stop"/"length"), stopped or failed. */
  end(entry, note) {
    if (note !== undefined) entry.note = note;
    this.streaming = null;
    this.show(this.answers.indexOf(entry));
  }

  /* An answer that failed before it had a turn: gone, unless it was the only one. */
  drop(entry, message) {
    this.streaming = null;
    if (entry.turnId || this.answers.length === 1) {
      if (!entry.text) entry.failed = `(no answer: ${message})`;
      this.end(entry);
      return;
    }
    this.answers.splice(this.answers.indexOf(entry), 1);
    this.show(this.answers.length - 1);
  }

  /* Shows answer `index`: its text, version, rating, correction and notes. */
  show(index) {
    if (index < 0 || index >= this.answers.length) return;
    if (index !== this.index) this.toggleCorrection(false); // it edits the answer shown
    this.index = index;
    const entry = this.answers[index];
    const live = entry === this.streaming;
    this.answer.classList.toggle("streaming", live);
    this.answer.classList.toggle("failed", Boolean(entry.failed));
    this.answer.classList.toggle("md", !live && !entry.failed);
    if (live) this.answer.textContent = entry.text;
    else if (entry.failed) this.answer.textContent = entry.failed;
    else this.answer.replaceChildren(renderMarkdown(entry.text));
    renderFold(this.part("steps"), fromSteps(entry.steps), live); // folded once complete
    this.el.classList.toggle("stopped", Boolean(entry.stopped));
    this.showIds(entry);
    this.showFeedback(entry);
    const count = this.answers.length;
    this.part("siblings").hidden = count < 2;
    this.part("answer-index").textContent = `${index + 1}/${count}`;
    this.setTools();
  }

  showIds(entry) {
    if (entry.turnId) this.el.dataset.turnId = String(entry.turnId);
    else delete this.el.dataset.turnId;
    this.part("version-badge").textContent = entry.version || "";
    if (entry.version) this.el.dataset.version = entry.version;
    else delete this.el.dataset.version;
  }

  showFeedback(entry) {
    this.part("thumb-up").setAttribute("aria-pressed", String(entry.rating === "up"));
    this.part("thumb-down").setAttribute("aria-pressed", String(entry.rating === "down"));
    this.el.classList.toggle("corrected", Boolean(entry.correction));
    const shown = this.part("correction-shown");
    shown.hidden = !entry.correction;
    this.part("correction-text").replaceChildren(renderMarkdown(entry.correction || ""));
    const calls = this.part("correction-steps");
    calls.hidden = !entry.correctionMessages;
    renderLines(calls, fromMessages(entry.correctionMessages));
    const notes = [];
    if (entry.pending) notes.push("stopping…");
    else if (entry.stopped) notes.push("(stopped)");
    if (entry.note) notes.push(entry.note);
    this.part("feedback-note").textContent = notes.join(" · ");
  }

  /* Feedback and regeneration need the shown answer's turn and no answer streaming. */
  setTools() {
    const entry = this.shown;
    const ready = Boolean(entry && entry.turnId && !entry.pending) && entry !== this.streaming;
    for (const id of ["thumb-up", "thumb-down", "correct"]) this.part(id).disabled = !ready;
    this.part("regen").disabled = !ready || chat.busy;
    const lone = !this.streaming;
    this.part("prev-answer").disabled = !lone || this.index === 0;
    this.part("next-answer").disabled = !lone || this.index === this.answers.length - 1;
  }

  note(entry, text) {
    entry.note = text;
    if (entry === this.shown) this.showFeedback(entry);
  }

  /* Opens the editor on the answer shown: its final text and its calls (those of its
     latest correction, else those it made), or closes it. */
  toggleCorrection(open) {
    const form = this.part("correction-form");
    form.hidden = open === undefined ? !form.hidden : !open;
    this.showEditError(null);
    if (!form.hidden) {
      const input = this.part("correction-input");
      const entry = this.shown;
      input.value = (entry && (entry.correction || entry.text)) || "";
      const corrected = entry && entry.correctionMessages;
      this.calls.load(corrected ? fromMessages(corrected) : fromSteps(entry && entry.steps));
      input.focus();
      input.select();
    }
  }

  /* A problem with what the editor holds, next to it (null: none); everything typed stays. */
  showEditError(err, field) {
    const line = this.part("correction-error");
    line.hidden = !err;
    line.textContent = err ? err.message : "";
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  }

  /* `correction`: a better final answer; `messages`: the whole corrected trajectory
     (its steps with calls, then the final answer, which is `correction` too). */
  async sendFeedback(entry, rating, correction, messages) {
    const body = { turn_id: entry.turnId, rating };
    if (messages) body.correction_messages = messages;
    else if (correction !== undefined) body.correction = correction;
    const result = await api("POST", "v1/feedback", body);
    entry.rating = rating;
    entry.correction = correction === undefined ? null : correction;
    entry.correctionMessages = messages || null;
    // honest about what happens next: a correction may train the next version or be kept
    // aside to test it; either way the next learning cycle uses it
    let note = correction !== undefined ? "thanks: the next learning cycle uses it" : "thanks";
    if (result.learning_started) {
      note += ` · learning started (${result.learning_started}); see the Learning tab`;
    }
    this.note(entry, note);
    return result;
  }

  rate(rating) {
    const entry = this.shown;
    if (!entry || !entry.turnId) return undefined;
    return guarded(() => this.sendFeedback(entry, rating));
  }

  /* Saves the editor: a text correction, or, when the answer called tools or the editor
     holds calls, the corrected trajectory. Refused (by the page or the server): the
     reason shows next to the editor and nothing in it is lost. */
  async submitCorrection() {
    const entry = this.shown;
    if (!entry || !entry.turnId || this.saving) return;
    const input = this.part("correction-input");
    const text = input.value.trim();
    let messages = null;
    try {
      if (!text) throw new EditError("write the better answer first", input);
      if (!this.calls.empty || fromSteps(entry.steps).steps.length) {
        messages = [...this.calls.messages(), { role: "assistant", content: text }];
      }
    } catch (err) {
      this.showEditError(err, err.field);
      return;
    }
    this.showEditError(null);
    this.saving = true;
    this.part("correction-submit").disabled = true;
    try {
      await this.sendFeedback(entry, "down", text, messages);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) showError(err);
      else this.showEditError(err);
      return;
    } finally {
      this.saving = false;
      this.part("correction-submit").disabled = false;
    }
    this.toggleCorrection(false);
    if (messages) await guarded(() => this.storedCorrection(entry));
  }

  /* The saved trajectory as the server completed it (the results it ran the tools for). */
  async storedCorrection(entry) {
    const threadId = entry.threadId || chat.threadId;
    const turn = threadId && (await storedTurn(threadId, entry.turnId));
    const latest = turn && turn.feedback && turn.feedback[turn.feedback.length - 1];
    if (latest && latest.correction_messages) {
      entry.correctionMessages = latest.correction_messages;
      if (entry === this.shown) this.showFeedback(entry);
    }
  }

  regenerate() {
    const previous = this.shown && this.shown.turnId;
    if (!previous || chat.busy) return undefined;
    const body = { model: MODEL, messages: [], stream: true, regen_of: previous };
    return guarded(() => streamInto(this, body));
  }

  /* A turn as the thread history holds it, with every answer to its message. */
  load(turn) {
    const answers = Array.isArray(turn.answers) && turn.answers.length ? turn.answers : [turn];
    this.answers = answers.map(entryOf);
    this.show(this.answers.length - 1);
  }
}

function scrollToEnd() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

/* The stored turn `turnId` of thread `threadId` (any of a message's answers); null when
   it is not (yet) stored. */
async function storedTurn(threadId, turnId) {
  const thread = await api("GET", `v1/threads/${encodeURIComponent(threadId)}`);
  return thread.turns.flatMap((t) => t.answers || [t]).find((t) => t.turn_id === turnId) || null;
}

/* After Stop: the server stops the answer at its next token and logs what it had; wait for
   that turn (its stored text may hold a few more tokens than arrived) so its feedback tools
   work. An answer that never started is logged once it would have: tools stay usable. */
async function settleStopped(view, entry, threadId) {
  entry.pending = true;
  view.note(entry, "");
  const deadline = Date.now() + STOP_WAIT_MS;
  try {
    while (entry.turnId && threadId && Date.now() < deadline) {
      const stored = await storedTurn(threadId, entry.turnId);
      if (stored) {
        entry.text = stored.answer || entry.text;
        entry.steps = stored.steps || entry.steps;
        break;
      }
      await sleep(250);
    }
  } finally {
    entry.pending = false;
    entry.stopped = true;
    view.end(entry);
  }
}

/* Streams one answer into `view` and leaves the turn, version and thread it names. */
async function streamInto(view, body) {
  const epoch = chat.epoch;
  const controller = new AbortController();
  chat.controller = controller;
  setBusy(true);
  const entry = view.begin();
  let threadId = null;
  try {
    const response = await request(
      "POST",
      "v1/chat/completions",
      { ...window.CHAT_OPTIONS, ...body },
      controller.signal,
    );
    if (!response.ok) {
      throw new ApiError(messageOf(await readJson(response), response), response.status);
    }
    const headers = response.headers;
    view.identify(
      entry,
      Number(headers.get("X-Learnloop-Turn-Id")) || null,
      headers.get("X-Learnloop-Version"),
    );
    threadId = headers.get("X-Learnloop-Thread-Id");
    let finishReason = null;
    let logged = null; // the turn's steps, as the last chunk has them
    await readEvents(response.body, (chunk) => {
      if (chunk.error) throw new ApiError(chunk.error.message || "the answer failed", 500);
      view.identify(entry, chunk.turn_id, chunk.version);
      threadId = chunk.thread_id || threadId;
      if (chunk.learnloop_step) view.step(entry, chunk.learnloop_step);
      if (chunk.learnloop_steps) logged = chunk.learnloop_steps;
      const choice = (chunk.choices || [])[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) view.append(entry, choice.delta.content);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    });
    view.end(entry, finishReason === "length" ? "(cut off at the length limit)" : "");
    if (logged) view.logged(entry, logged);
    entry.threadId = threadId;
  } catch (err) {
    if (!controller.signal.aborted) {
      view.drop(entry, err.message);
      throw err;
    }
  } finally {
    if (chat.controller === controller) {
      chat.controller = null;
      setBusy(false); // after Stop too: the next message may go while this one settles
    }
  }
  if (controller.signal.aborted) await settleStopped(view, entry, threadId);
  if (entry.version) setActiveVersion(entry.version);
  if (epoch === chat.epoch && threadId) {
    chat.threadId = threadId;
    await loadThreads(); // a new thread, or one more turn in this one
  }
}

/* The Stop button: ends the answer streaming now; what arrived is kept, marked stopped. */
export function stop() {
  if (chat.controller) chat.controller.abort();
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
  showThreads(false);
  $("message-input").focus();
}

async function openThread(id) {
  const thread = await api("GET", `v1/threads/${encodeURIComponent(id)}`);
  clearConversation();
  chat.threadId = thread.id;
  for (const turn of thread.turns) new TurnView(turn.user_message).load(turn);
  markCurrentThread();
  showThreads(false);
  scrollToEnd();
}

wireThreads({ current: () => chat.threadId, open: openThread, deleted: newChat });
