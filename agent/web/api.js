/* The server's JSON API, the API key this browser sends, and the error line.

   Every request goes through request(): relative URLs (the page is served by the server it
   talks to), the page token the server wrote into this page (it refuses a browser's call
   without it: that is how it tells this page from other sites' pages), `Authorization:
   Bearer KEY` when a key is saved, and `Content-Type: application/json` on every POST,
   with or without a body (the server refuses a POST without it). A server off loopback
   answers only requests with an API key: on a 401 the page asks for one and keeps it in
   this browser's localStorage until "Forget API key".

   Streamed answers are OpenAI-style server-sent events read with fetch + a body reader
   (EventSource cannot POST): see readEvents(). */

import { $ } from "./page.js";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function readJson(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return { error: { message: text.slice(0, 300) } };
  }
}

/* The server's own message for a failed response ({"error": {"message"}}), else its status. */
export function messageOf(data, response) {
  const message = data && data.error && data.error.message;
  return message || `${response.status} ${response.statusText || "error"}`;
}

// ---- the page token and the API key ----------------------------------------------------

const PAGE_TOKEN_HEADER = "X-Learnloop-Page-Token";

/* The token the server wrote into this page (index.html's meta tag); "" if it wrote none. */
function pageToken() {
  const meta = document.querySelector('meta[name="learnloop-page-token"]');
  return (meta && meta.content) || "";
}

const KEY_ITEM = "learnloop.apiKey"; // localStorage: the API key this browser sends

export function savedKey() {
  try {
    return localStorage.getItem(KEY_ITEM) || "";
  } catch {
    return ""; // storage disabled: the page works on loopback, where no key is needed
  }
}

export function saveKey(key) {
  localStorage.setItem(KEY_ITEM, key);
}

export function forgetKey() {
  localStorage.removeItem(KEY_ITEM);
}

/* Shows the key form after a 401; a key the server refused is forgotten. */
function askForKey(refused) {
  if (refused) forgetKey();
  $("key-refused").hidden = !refused;
  $("key-forget").hidden = true;
  $("key-form").hidden = false;
  $("key-input").focus();
}

// ---- requests --------------------------------------------------------------------------

/* The raw response to one API call; only an unreachable server throws (and an abort by
   `signal`, an AbortController's, which throws the browser's AbortError as it is). */
export async function request(method, path, body, signal) {
  const init = { method, headers: { [PAGE_TOKEN_HEADER]: pageToken() }, signal };
  const key = savedKey();
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined || method !== "GET") {
    init.headers["Content-Type"] = "application/json";
  }
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (signal && signal.aborted) throw err;
    throw new ApiError(`cannot reach the learnloop server (${err.message})`, 0);
  }
  if (response.status === 401) askForKey(Boolean(key));
  return response;
}

/* One API call's JSON answer; a failed one throws an ApiError with the server's message. */
export async function api(method, path, body) {
  const response = await request(method, path, body);
  const data = await readJson(response);
  if (!response.ok) throw new ApiError(messageOf(data, response), response.status);
  return data;
}

/* Calls onEvent with each `data:` payload of a server-sent event stream, parsed as JSON,
   until `[DONE]` or the end of the body. */
export async function readEvents(body, onEvent) {
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

// ---- the error line --------------------------------------------------------------------

export function showError(err) {
  if (err instanceof ApiError && err.status === 401) return; // the key form says it
  $("error-text").textContent = err instanceof Error ? err.message : String(err);
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

/* Runs an action started by the user; its failure goes to the error line. */
export async function guarded(action) {
  clearError();
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  }
}
