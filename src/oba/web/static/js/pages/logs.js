// Log viewer: audit records from /api/v1/logs with level/source/user/text filters, a node
// column (nodeId), paging and exports (downloaded with the session's token). Rules: the record
// shape is read defensively (records|logs|entries|items; nodeId at top level or in fields).

import { apiText, get, query } from "../api.js";
import { button, card, clear, download, field, h, input, run, select, table } from "../ui.js";

const PAGE = 50;

export function recordsOf(data) {
  if (Array.isArray(data)) return data;
  return data.records || data.logs || data.entries || data.items || [];
}

function nodeOf(r) {
  const fields = r.fields || {};
  return r.nodeId ?? fields.nodeId ?? fields.node ?? "";
}

export async function render(main) {
  const level = select([["", "any"], "debug", "info", "warn", "error"], "", { name: "level" });
  const source = select([["", "any"], "ldap", "rest", "raft", "system"], "", { name: "source" });
  const user = input({ name: "user", placeholder: "bind DN" });
  const text = input({ name: "search", placeholder: "words in the message" });
  const statsBox = h("div", { class: "muted small" });
  const list = h("div");
  const pager = h("div", { class: "actions" });
  let offset = 0;

  const filters = () => ({ level: level.value, source: source.value, user: user.value.trim(),
    search: text.value.trim() });

  async function load(at = 0) {
    offset = at;
    let data;
    try {
      data = await get(`/logs${query({ ...filters(), offset, limit: PAGE })}`);
    } catch (err) {
      clear(list).append(h("p", { class: "error-text", text: `Cannot read the log: ${err.message}` }));
      return;
    }
    const records = recordsOf(data);
    const rows = records.map((r) => h("tr", { class: `lvl-${r.level}` },
      h("td", { class: "nowrap", text: r.timestamp || r.time || "" }),
      h("td", {}, h("span", { class: `badge lvl ${r.level}`, text: r.level || "" })),
      h("td", { text: r.source || "" }), h("td", { text: r.user || "" }),
      h("td", { class: "num", text: nodeOf(r) }), h("td", { class: "value", text: r.message || "" })));
    clear(list).append(table(["Time", "Level", "Source", "User", "Node", "Message"], rows,
      { "aria-label": "Log records" }));
    const total = data.total_count ?? data.totalCount ?? data.total ?? data.count;
    clear(pager).append(...[
      h("span", { class: "muted", text: total !== undefined
        ? `${total ? offset + 1 : 0}–${offset + records.length} of ${total}` : `${records.length} records` }),
      offset > 0 ? button("Newer", () => load(Math.max(0, offset - PAGE)), { class: "secondary" }) : null,
      (total !== undefined ? offset + records.length < total : records.length === PAGE)
        ? button("Older", () => load(offset + PAGE), { class: "secondary" }) : null].filter(Boolean));
    try {
      const st = await get("/logs/stats");
      const by = st.by_level || st.byLevel || st.levels || {};
      const parts = Object.entries(by).map(([k, v]) => `${k}: ${v}`);
      clear(statsBox).append(`${st.total_entries ?? st.total ?? st.count ?? "?"} records stored` +
        (parts.length ? ` · ${parts.join(" · ")}` : ""));
    } catch {
      clear(statsBox);
    }
  }

  function exporter(format, type) {
    return button(`Export ${format.toUpperCase()}`, () => run(async () => {
      const body = await apiText(`/logs/export${query({ ...filters(), format })}`);
      download(`oba-audit.${format}`, body, type);
    }, "Export failed"), { class: "secondary" });
  }

  const form = h("form", { class: "form-grid filters", "aria-label": "Log filters" },
    field("Level", level), field("Source", source), field("User", user), field("Search", text),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Filter" }),
      exporter("json", "application/json"), exporter("ndjson", "application/x-ndjson"),
      exporter("csv", "text/csv")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(0);
  });
  main.append(card("Filters", form, statsBox), card("Records", list, pager));
  await load(0);
}
