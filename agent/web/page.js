/* Small helpers every part of the page shares. Imports nothing, so any module may import it
   without an import cycle. */

export const $ = (id) => document.getElementById(id);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* A stored timestamp as "YYYY-MM-DD HH:MM"; "" for none. */
export function shortTime(value) {
  return value ? String(value).replace("T", " ").slice(0, 16) : "";
}

/* The version that answers next, in the top bar and the Learning view; none keeps both. */
export function setActiveVersion(version) {
  if (version) {
    $("active-version").textContent = version;
    $("dash-active").textContent = version;
  }
}
