// Config editor: one section at a time from /api/v1/config/{section}; changed keys are sent
// with PATCH, which applies hot-reloadable keys and refuses the others with a message.
// Rules: scalars are edited as text/checkbox, lists and maps as JSON; masked secrets stay
// untouched unless edited.

import { api } from "../api.js";
import { button, card, clear, field, h, input, run, select, showNotice } from "../ui.js";

const SECTIONS = ["server", "directory", "security", "logging", "rest", "web", "storage",
  "cluster", "acl"];

function control(name, value) {
  if (typeof value === "boolean") return h("input", { type: "checkbox", checked: value, name });
  if (value !== null && typeof value === "object") {
    return h("textarea", { rows: 6, name, spellcheck: "false", value: JSON.stringify(value, null, 1) });
  }
  return input({ name, value: value === null ? "" : String(value) });
}

function read(el, original) {
  if (el.type === "checkbox") return el.checked;
  if (original !== null && typeof original === "object") return JSON.parse(el.value || "null");
  if (typeof original === "number") {
    const n = Number(el.value);
    return Number.isNaN(n) ? el.value : n;
  }
  if (original === null && el.value === "") return null;
  return el.value;
}

export async function render(main, arg) {
  const chooser = select(SECTIONS, SECTIONS.includes(arg) ? arg : "logging", { name: "section" });
  const body = h("div");
  main.append(card("Section", h("div", { class: "inline" }, field("Section", chooser)), body));
  chooser.addEventListener("change", () => load());

  async function load() {
    clear(body);
    const section = chooser.value;
    let cfg;
    try {
      cfg = await api("GET", `/config/${section}`);
    } catch (err) {
      body.append(h("p", { class: "error-text", text: `${section}: ${err.message}` }));
      return;
    }
    const controls = {};
    const form = h("form", { class: "form-grid", "aria-label": `Configuration ${section}` });
    for (const [key, value] of Object.entries(cfg)) {
      controls[key] = control(key, value);
      form.append(field(`${section}.${key}`, controls[key]));
    }
    form.append(h("div", { class: "actions" }, h("button", { type: "submit", text: "Apply changes" }),
      button("Reload", () => load(), { class: "secondary" })));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        const patch = {};
        for (const [key, el] of Object.entries(controls)) {
          let now;
          try {
            now = read(el, cfg[key]);
          } catch {
            throw new Error(`${section}.${key} is not valid JSON`);
          }
          if (JSON.stringify(now) !== JSON.stringify(cfg[key])) patch[key] = now;
        }
        if (!Object.keys(patch).length) {
          showNotice("Nothing changed.");
          return;
        }
        const res = await api("PATCH", `/config/${section}`, patch);
        await load();  // the form shows the values now in force before the notice says so
        showNotice(res.message || `Applied ${Object.keys(patch).join(", ")}.`);
      }, "Config change refused");
    });
    body.append(h("p", { class: "muted small", text: "Only hot-reloadable keys can be changed " +
      "here; the server explains when a key needs a restart." }), form);
  }
  await load();
}
