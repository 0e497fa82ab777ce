/* Markdown for answers and corrections, rendered safely: DOM nodes built one by one, every
   piece of text set as text (never innerHTML), so whatever a model writes, HTML included,
   shows as the characters it wrote.

   What it renders (the markdown small models write): paragraphs (a single newline is a line
   break), **bold** / __bold__, *italic* / _italic_, `inline code`, fenced ``` / ~~~ code
   blocks, - / * / + and 1. lists, # headings, > quotes, --- rules, [links](https://...) and
   bare http(s) URLs. A link goes only to http: or https: (anything else stays text) and
   opens in a new tab without access to this page. Imports nothing. */

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BARE_URL = /^https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_]/;
const ESCAPABLE = /[\\`*_[\]()#+\-.!>~|{}]/;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/* The URL as a link may use it: absolute http(s) only, else null. */
export function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null; // relative or malformed: no link
  }
}

function link(href, parent, label) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  if (label === undefined) a.textContent = href;
  else inline(label, a);
  parent.append(a);
}

/* Where the emphasis opened by `marker` at `start` closes, or -1. It must enclose text that
   does not begin or end with a space; `_` only between non-word characters (snake_case
   stays as it is); a single `*` skips the `**` of a nested bold. */
function closing(text, start, marker) {
  const from = start + marker.length;
  if (from >= text.length || /\s/.test(text[from])) return -1;
  if (marker[0] === "_" && start > 0 && /\w/.test(text[start - 1])) return -1;
  for (let j = text.indexOf(marker, from + 1); j > 0; j = text.indexOf(marker, j + 1)) {
    if (marker.length === 1 && text[j + 1] === marker) {
      j += 1; // part of a double marker: not ours
      continue;
    }
    if (/\s/.test(text[j - 1])) continue;
    if (marker[0] === "_" && /\w/.test(text[j + marker.length] || "")) continue;
    return j;
  }
  return -1;
}

/* Appends the inline markdown of `text` to `parent`. */
function inline(text, parent) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(plain);
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === "\\" && ESCAPABLE.test(text[i + 1] || "")) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const ticks = /^`+/.exec(rest)[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > 0) {
        flush();
        const code = el("code");
        code.textContent = text.slice(i + ticks.length, end);
        parent.append(code);
        i = end + ticks.length;
        continue;
      }
      plain += ticks;
      i += ticks.length;
      continue;
    }
    if (c === "*" || c === "_") {
      const marker = text[i + 1] === c ? c + c : c;
      const end = closing(text, i, marker);
      if (end > 0) {
        flush();
        const node = el(marker.length === 2 ? "strong" : "em");
        inline(text.slice(i + marker.length, end), node);
        parent.append(node);
        i = end + marker.length;
        continue;
      }
      plain += marker;
      i += marker.length;
      continue;
    }
    if (c === "[") {
      const m = /^\[([^\]\n]+)\]\(\s*<?([^\s()<>]+)>?\s*\)/.exec(rest);
      const href = m && safeUrl(m[2]);
      if (href) {
        flush();
        link(href, parent, m[1]);
        i += m[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "H") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = BARE_URL.exec(rest);
      const href = m && safeUrl(m[0]);
      if (href) {
        flush();
        link(href, parent);
        i += m[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
}

/* Lines as inline markdown, a line break between each. */
function lines(parts, parent) {
  parts.forEach((line, k) => {
    if (k) parent.append(el("br"));
    inline(line, parent);
  });
  return parent;
}

/* A list starting at lines[start]: its element and the index after it. Lines indented
   under an item continue it; a blank line followed by another item keeps the list going. */
function list(source, start, ordered) {
  const pattern = ordered ? NUMBERED : BULLET;
  const node = el(ordered ? "ol" : "ul");
  if (ordered) {
    const first = Number(pattern.exec(source[start])[1]);
    if (first !== 1) node.start = first;
  }
  let item = null;
  let i = start;
  while (i < source.length) {
    const line = source[i];
    const m = pattern.exec(line);
    if (m) {
      item = { parts: [ordered ? m[2] : m[1]] };
      node.append(lines(item.parts, el("li")));
      item.node = node.lastElementChild;
    } else if (line.trim() === "") {
      if (!pattern.test(source[i + 1] || "")) break;
    } else if (/^\s+\S/.test(line) && item) {
      item.node.append(el("br"));
      inline(line.trim(), item.node);
    } else {
      break;
    }
    i += 1;
  }
  return [node, i];
}

/* The markdown `text` as a fragment of DOM nodes, safe to insert anywhere. */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const source = String(text || "").replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  const endParagraph = () => {
    if (paragraph.length) out.append(lines(paragraph, el("p")));
    paragraph = [];
  };
  let i = 0;
  while (i < source.length) {
    const line = source[i];
    const fence = FENCE.exec(line);
    if (fence) {
      endParagraph();
      const body = [];
      i += 1;
      while (i < source.length && !source[i].trim().startsWith(fence[1])) body.push(source[i++]);
      i += 1; // the closing fence (an answer cut off may lack it: the rest is code)
      const pre = el("pre");
      const code = el("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      out.append(pre);
      continue;
    }
    if (line.trim() === "") {
      endParagraph();
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      endParagraph();
      const level = Math.min(heading[1].length + 2, 6); // inside an answer: small headings
      out.append(lines([heading[2]], el(`h${level}`, "md-heading")));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      endParagraph();
      out.append(el("hr"));
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      endParagraph();
      const [node, next] = list(source, i, NUMBERED.test(line));
      out.append(node);
      i = next;
      continue;
    }
    const quote = QUOTE.exec(line);
    if (quote) {
      endParagraph();
      const quoted = [];
      while (i < source.length && QUOTE.test(source[i])) quoted.push(QUOTE.exec(source[i++])[1]);
      const block = el("blockquote");
      block.append(renderMarkdown(quoted.join("\n")));
      out.append(block);
      continue;
    }
    paragraph.push(line);
    i += 1;
  }
  endParagraph();
  return out;
}
