// Dashboard: server stats, LDAP operation counters, recent activity and the cluster panel,
// refreshed every 5 seconds. Rules: one failed refresh shows an error line in the panel and the
// next tick tries again; the timer stops when the page is left.

import { get } from "../api.js";
import { card, clear, describe, formatBytes, formatDuration, h, table } from "../ui.js";

const REFRESH_MS = 5000;

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "stat-value", text: value }),
    h("div", { class: "stat-label", text: label }));
}

function statsPanel(box, s) {
  clear(box).append(h("div", { class: "stats" },
    stat("Status", s.status), stat("Uptime", formatDuration(s.uptimeSecs)),
    stat("Connections", s.connections), stat("Requests", s.requests),
    stat("Entries", s.storage ? s.storage.entryCount : "—"),
    stat("Database", s.storage ? formatBytes(s.storage.databaseSizeBytes) : "—"),
    stat("Disabled accounts", s.security ? s.security.disabledAccounts : "—"),
    stat("Failed logins (24h)", s.security ? s.security.failedLogins24h : "—")),
  h("p", { class: "muted small", text: `Oba ${s.version} · started ${s.startTime}` +
    (s.system ? ` · pid ${s.system.pid} · Python ${s.system.python}` : "") }));
}

function opsPanel(box, ops) {
  const names = Object.keys(ops || {}).sort();
  clear(box).append(table(["Operation", "Count"], names.map((n) => h("tr", {},
    h("td", { text: n.replace(/^ldap\./, "LDAP ") }), h("td", { class: "num", text: ops[n] })))));
}

function activityPanel(box, data) {
  const rows = (data.activities || []).map((a) => h("tr", {},
    h("td", { class: "nowrap", text: a.timestamp }), h("td", { text: a.type }),
    h("td", { text: a.user || "" }), h("td", { text: a.message })));
  clear(box).append(table(["Time", "Type", "User", "Message"], rows));
}

/** Rows of the cluster table: this node's own view, each peer with the fields known for it. */
export function clusterRows(st) {
  const peers = [...(st.peers || [])];
  if (!peers.some((p) => p.id === st.nodeId)) peers.unshift({ id: st.nodeId, addr: "" });
  const connected = new Set(st.connected || []);
  return peers.map((p) => {
    const self = p.id === st.nodeId;
    const leader = st.leaderId && p.id === st.leaderId;
    let state = p.state;
    if (self) state = st.state;
    else if (!state && leader) state = "leader";
    else if (!state && connected.has(p.id)) state = "reachable";
    else if (!state && st.state === "leader") state = "unreachable";
    const term = self ? st.term : p.term;
    const commit = self ? st.commitIndex : p.commitIndex;
    const applied = self ? st.lastApplied : (p.lastApplied ?? p.matchIndex);
    let lag = p.lag;
    if (self) lag = Math.max(0, (st.commitIndex || 0) - (st.lastApplied || 0));
    else if (lag === undefined && p.matchIndex !== undefined && st.lastIndex !== undefined) {
      lag = Math.max(0, st.lastIndex - p.matchIndex);
    }
    return { id: p.id, addr: p.addr || "", self, leader: Boolean(leader), state: state || "—",
      term: term ?? "—", commit: commit ?? "—", applied: applied ?? "—", lag: lag ?? "—" };
  });
}

function clusterPanel(box, st) {
  clear(box);
  if (!st.enabled || st.mode === "standalone") {
    box.append(h("p", { class: "standalone", "data-testid": "cluster-mode" },
      "This node runs ", h("strong", { text: "standalone" }), " (cluster mode is off)."));
    return;
  }
  const rows = clusterRows(st);
  const leader = rows.find((r) => r.leader);
  box.append(h("p", { "data-testid": "cluster-leader" }, leader
    ? ["Leader: ", h("strong", { text: `node ${leader.id}` }), leader.addr ? ` (${leader.addr})` : "",
      ` · term ${st.term}`]
    : [h("strong", { class: "warn", text: "No leader" }), ` · term ${st.term}`]));
  box.append(table(["Node", "Address", "State", "Term", "Commit", "Applied", "Lag"],
    rows.map((r) => h("tr", { class: r.leader ? "leader" : null, "data-node": r.id },
      h("td", {}, `node ${r.id}`, r.self ? h("span", { class: "badge", text: "this node" }) : null,
        r.leader ? h("span", { class: "badge lead", text: "★ leader" }) : null),
      h("td", { text: r.addr }), h("td", { text: r.state }), h("td", { class: "num", text: r.term }),
      h("td", { class: "num", text: r.commit }), h("td", { class: "num", text: r.applied }),
      h("td", { class: "num", text: r.lag }))),
    { "aria-label": "Cluster nodes" }));
  box.append(h("p", { class: "muted small", text: "Term, commit and applied indexes of other " +
    "nodes are shown when this node knows them; lag is commit minus applied." }));
}

async function refresh(parts, stamp) {
  const jobs = [
    [parts.stats, () => get("/stats"), (box, s) => { statsPanel(box, s); opsPanel(parts.ops, s.operations); }],
    [parts.activity, () => get("/activities?limit=10"), activityPanel],
    [parts.cluster, () => get("/cluster/status"), clusterPanel],
  ];
  await Promise.all(jobs.map(async ([box, load, show]) => {
    try {
      show(box, await load());
    } catch (err) {
      clear(box).append(h("p", { class: "error-text", text: describe(err) }));
    }
  }));
  clear(stamp).append(`Updated ${new Date().toLocaleTimeString()} · refreshes every 5 s`);
}

export async function render(main) {
  const parts = {
    stats: h("div", {}, "Loading…"), ops: h("div", {}, "Loading…"),
    activity: h("div", {}, "Loading…"), cluster: h("div", {}, "Loading…"),
  };
  const stamp = h("p", { class: "muted small", "aria-live": "polite" });
  main.append(stamp, h("div", { class: "grid" },
    card("Server", parts.stats), card("Cluster", parts.cluster),
    card("LDAP and REST operations", parts.ops), card("Recent activity", parts.activity)));
  await refresh(parts, stamp);
  const timer = setInterval(() => refresh(parts, stamp), REFRESH_MS);
  return () => clearInterval(timer);
}
