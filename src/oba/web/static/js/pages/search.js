// Search: base, scope, filter and attributes; results as a table; export of the results as LDIF
// or JSON, built in the browser. Rules: up to 1000 results per page, "next" pages with offset.

import { baseDN, search } from "../api.js";
import { button, card, clear, download, field, h, input, run, select, showNotice } from "../ui.js";

const PAGE = 1000;

function ldifLine(name, value) {
  const safe = /^[\x20-\x7e]*$/.test(value) && !/^[ :<]/.test(value) && !/ $/.test(value);
  if (safe) return `${name}: ${value}`;
  const bytes = new TextEncoder().encode(value);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `${name}:: ${btoa(bin)}`;
}

export function toLdif(entries) {
  return entries.map((e) => {
    const lines = [ldifLine("dn", e.dn)];
    for (const [name, values] of Object.entries(e.attributes)) {
      const plain = name.replace(/;base64$/i, "");
      for (const v of values) lines.push(name === plain ? ldifLine(name, v) : `${plain}:: ${v}`);
    }
    return lines.join("\n");
  }).join("\n\n") + "\n";
}

export async function render(main) {
  const base = input({ value: await baseDN(), name: "baseDN" });
  const scope = select([["sub", "Subtree"], ["one", "One level"], ["base", "Base entry"]], "sub",
    { name: "scope" });
  const filter = input({ value: "(objectClass=*)", name: "filter" });
  const attributes = input({ placeholder: "all user attributes", name: "attributes" });
  const results = h("div");
  let last = [];
  let offset = 0;

  async function go(at = 0) {
    await run(async () => {
      const res = await search(base.value.trim(), scope.value, filter.value.trim() || "(objectClass=*)",
        attributes.value.trim(), PAGE, at);
      offset = at;
      last = res.entries;
      showResults(res);
    }, "Search failed");
  }

  function showResults(res) {
    clear(results);
    results.append(h("p", { class: "muted", "aria-live": "polite",
      text: `${res.totalCount} ${res.totalCount === 1 ? "entry" : "entries"} found` +
        (res.totalCount > res.entries.length ? ` (showing ${offset + 1}–${offset + res.entries.length})` : "") }),
    h("div", { class: "actions" },
      button("Export LDIF", () => download("search.ldif", toLdif(last), "text/plain"), { class: "secondary" }),
      button("Export JSON", () => download("search.json", JSON.stringify(last, null, 2),
        "application/json"), { class: "secondary" }),
      offset > 0 ? button("Previous page", () => go(Math.max(0, offset - PAGE)), { class: "secondary" }) : null,
      res.hasMore ? button("Next page", () => go(offset + PAGE), { class: "secondary" }) : null));
    const list = h("div", { class: "results", "aria-label": "Search results" });
    for (const e of res.entries) {
      const attrs = Object.entries(e.attributes).map(([k, vs]) => h("div", { class: "kv" },
        h("span", { class: "k", text: `${k}:` }), h("span", { text: vs.join(", ") })));
      list.append(h("article", { class: "result" },
        h("a", { class: "dn", href: `#/entries/${encodeURIComponent(e.dn)}`, text: e.dn }), attrs));
    }
    results.append(list);
    if (!res.entries.length) showNotice("No entries matched.");
  }

  const form = h("form", { class: "form-grid", "aria-label": "Search form" },
    field("Base DN", base), field("Scope", scope), field("Filter", filter),
    field("Attributes", attributes, "comma-separated; * user, + operational"),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Search" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(0);
  });
  main.append(card("Query", form), card("Results", results));
}
