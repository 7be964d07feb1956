// Small DOM helpers shared by every page. Rules: build nodes with h(), never innerHTML from
// data; every input gets a visible <label> (field()); errors reach the user through
// showError() as one readable sentence.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (key === "value") {
      el.value = value;
    } else if (key === "checked") {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let fieldSeq = 0;

/** A labelled control: <div class="field"><label for=id>text</label><control id=id></div>. */
export function field(label, control, hint) {
  fieldSeq += 1;
  if (!control.id) control.id = `f${fieldSeq}`;
  return h("div", { class: "field" }, h("label", { for: control.id, text: label }), control,
    hint ? h("small", { class: "muted", text: hint }) : null);
}

export function input(attrs = {}) {
  return h("input", { type: "text", autocomplete: "off", ...attrs });
}

export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const opt of options) {
    const [val, text] = Array.isArray(opt) ? opt : [opt, opt];
    el.append(h("option", { value: val, text, selected: val === value ? "selected" : null }));
  }
  if (value !== undefined) el.value = value;
  return el;
}

export function button(text, onclick, attrs = {}) {
  return h("button", { type: "button", onclick, ...attrs }, text);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A table from rows of cells; head is a list of column titles. */
export function table(head, rows, attrs = {}) {
  return h("div", { class: "table-wrap" }, h("table", attrs,
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {
      colspan: head.length, class: "muted", text: "Nothing to show." })))));
}

let noticeTimer = null;

export function showNotice(text, kind = "ok") {
  const box = document.getElementById("notice");
  clear(box);
  box.className = `notice ${kind}`;
  box.append(h("span", { text }), button("×", () => clearNotice(), {
    "aria-label": "Dismiss message", class: "link" }));
  clearTimeout(noticeTimer);
  if (kind === "ok") noticeTimer = setTimeout(clearNotice, 6000);
}

export function clearNotice() {
  const box = document.getElementById("notice");
  clear(box);
  box.className = "";
}

export function describe(err) {
  if (err && err.code && err.message) return `${err.message} (${err.code})`;
  if (err && err.message) return err.message;
  return String(err);
}

export function showError(err, prefix = "") {
  showNotice(`${prefix ? `${prefix}: ` : ""}${describe(err)}`, "error");
}

/** Run an async action from a button: disables it meanwhile, shows errors readably. */
export async function run(action, what = "") {
  try {
    return await action();
  } catch (err) {
    showError(err, what);
    return undefined;
  }
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function formatDuration(secs) {
  const s = Math.floor(Number(secs) || 0);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const parts = [];
  if (d) parts.push(`${d}d`);
  if (d || hh) parts.push(`${hh}h`);
  parts.push(`${mm}m`, `${s % 60}s`);
  return parts.join(" ");
}

export function formatBytes(n) {
  let v = Number(n) || 0;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (v < 1024 || unit === "GiB") return `${v.toFixed(unit === "B" ? 0 : 1)} ${unit}`;
    v /= 1024;
  }
  return `${v}`;
}

export function card(title, ...body) {
  return h("section", { class: "card", "aria-label": title }, h("h2", { text: title }), ...body);
}

export function splitList(text) {
  return String(text || "").split(",").map((s) => s.trim()).filter(Boolean);
}
