/* The thread list beside the chat: searched as you type, renamed in place, deleted
   after a confirmation; the thread shown is marked current.

   chat.js owns the conversation: it says which thread it shows, how to open one and
   how to leave a deleted one (wireThreads). */

import { api, guarded } from "./api.js";
import { $, shortTime } from "./page.js";

const SEARCH_DELAY_MS = 250; // typing in the search box: wait for a pause

const state = {
  current: () => null, // chat.js: the thread it shows (null: a new conversation)
  listing: 0, // the latest list asked for: older answers are dropped
  open: async (_id) => {}, // chat.js: show a thread
  deleted: () => {}, // chat.js: the thread shown was deleted
};

/* chat.js says which thread it shows, how to open one, and what to do when the one shown
   is deleted. */
export function wireThreads({ current, open, deleted }) {
  state.current = current;
  state.open = open;
  state.deleted = deleted;
}

/* Marks the thread the chat shows (after it opens one, starts one, or answers). */
export function markCurrentThread() {
  const id = state.current();
  for (const item of document.querySelectorAll("#thread-list [data-thread-id]")) {
    const current = item.dataset.threadId === id;
    item.classList.toggle("current", current);
    item.setAttribute("aria-current", current ? "true" : "false");
  }
}

/* On a narrow screen the thread list is a panel the ☰ button opens; `open` shows it. */
export function showThreads(open) {
  const view = $("view-chat");
  const shown = open === undefined ? !view.classList.contains("threads-open") : open;
  view.classList.toggle("threads-open", shown);
  $("threads-toggle").setAttribute("aria-expanded", String(shown));
}

function searchText() {
  return $("thread-search").value.trim();
}

let searchTimer = null;

/* Typing in the search box lists the matching threads after a pause. */
export function searchSoon() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => guarded(loadThreads), SEARCH_DELAY_MS);
}

function threadItem(thread) {
  const item = document.createElement("li");
  item.className = "thread-row";
  item.dataset.testid = "thread-row";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thread";
  button.dataset.testid = "thread-item";
  button.dataset.threadId = thread.id;
  const title = document.createElement("span");
  title.className = "thread-title";
  title.dataset.testid = "thread-title";
  title.textContent = thread.title || "(empty)";
  const meta = document.createElement("span");
  meta.className = "thread-meta";
  const n = thread.turns;
  meta.textContent = `${n} turn${n === 1 ? "" : "s"} · ${shortTime(thread.last_at || thread.created_at)}`;
  button.append(title, meta);
  button.addEventListener("click", () => guarded(() => state.open(thread.id)));
  const rename = toolButton(PENCIL, "thread-rename", `rename “${thread.title}”`);
  rename.addEventListener("click", () => startRename(item, thread));
  const remove = toolButton(TRASH, "thread-delete", `delete “${thread.title}”`);
  remove.addEventListener("click", () => guarded(() => deleteThread(thread)));
  const tools = document.createElement("span");
  tools.className = "thread-tools";
  tools.append(rename, remove);
  item.append(button, tools);
  return item;
}

// Feather's "edit-2" and "trash-2" icons (MIT licence), drawn inline like the thumbs in
// index.html, so that they show without an emoji font
const PENCIL = ["M17 3a2.828 2.828 0 1 1 4 4L7.5 20.5 2 22l1.5-5.5L17 3z"];
const TRASH = [
  "M3 6h18",
  "M19 6v14a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V6m3 0V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2",
];
const SVG = "http://www.w3.org/2000/svg";

function icon(paths) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

function toolButton(paths, testid, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thread-tool";
  button.dataset.testid = testid;
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(icon(paths));
  return button;
}

/* The title in place becomes a field: Enter (or Save) renames, Escape leaves it. */
function startRename(item, thread) {
  const form = document.createElement("form");
  form.className = "rename-form";
  const input = document.createElement("input");
  input.type = "text";
  input.value = thread.title || "";
  input.maxLength = 400; // the server says what is too long (200), in one message
  input.dataset.testid = "thread-title-input";
  input.setAttribute("aria-label", "new title");
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "primary small";
  save.dataset.testid = "thread-title-save";
  save.textContent = "Save";
  form.append(input, save);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const path = `v1/threads/${encodeURIComponent(thread.id)}`;
      await api("PATCH", path, { title: input.value });
      await loadThreads();
    });
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") guarded(loadThreads);
  });
  item.replaceChildren(form);
  input.focus();
  input.select();
}

async function deleteThread(thread) {
  const question =
    `Delete “${thread.title}”? Its messages and their feedback are removed for good. ` +
    "Versions already trained on that feedback keep what they learned.";
  if (!window.confirm(question)) return;
  await api("DELETE", `v1/threads/${encodeURIComponent(thread.id)}`);
  if (thread.id === state.current()) state.deleted();
  await loadThreads();
}

export async function loadThreads() {
  const q = searchText();
  const asked = ++state.listing;
  const threads = await api("GET", q ? `v1/threads?q=${encodeURIComponent(q)}` : "v1/threads");
  if (asked !== state.listing) return; // a later search is on its way
  const list = $("thread-list");
  list.replaceChildren(...threads.map(threadItem));
  const empty = $("thread-empty");
  empty.hidden = threads.length > 0;
  empty.textContent = q ? `No conversation matches “${q}”.` : "No conversations yet.";
  markCurrentThread();
}
