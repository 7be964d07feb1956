// Entry browser: a tree loaded one level at a time (search scope=one), and the selected
// entry's view with edit, add child, move/rename and delete. Rules: a node's children are
// fetched when it is first expanded; after a change the affected parent is reloaded.

import { api, baseDN, entryPath, search } from "../api.js";
import { AttributeEditor, isOperational } from "../editor.js";
import { button, card, clear, field, h, input, run, showNotice, table } from "../ui.js";

function parentOf(dn) {
  const m = /^(?:[^,\\]|\\.)*,(.*)$/.exec(dn);
  return m ? m[1] : "";
}

function rdnOf(dn) {
  return dn.slice(0, dn.length - parentOf(dn).length).replace(/,$/, "");
}

export async function render(main, selected) {
  const base = await baseDN();
  const tree = h("ul", { class: "tree", role: "tree", "aria-label": "Directory tree" });
  const detail = h("div", { class: "detail" });
  main.append(h("div", { class: "browser" }, card("Tree", tree), card("Entry", detail)));
  const nodes = new Map();

  function makeNode(dn, label) {
    const children = h("ul", { role: "group", hidden: true });
    const toggle = button("▸", () => expand(dn), { class: "toggle", "aria-label": `Expand ${dn}`,
      "aria-expanded": "false" });
    const link = h("a", { href: `#/entries/${encodeURIComponent(dn)}`, text: label, title: dn });
    const li = h("li", { role: "treeitem" }, toggle, link, children);
    nodes.set(dn.toLowerCase(), { li, children, toggle, loaded: false, open: false });
    return li;
  }

  async function expand(dn, force = false) {
    const node = nodes.get(dn.toLowerCase());
    if (!node) return;
    if (node.open && !force) {
      node.open = false;
      node.children.hidden = true;
      node.toggle.textContent = "▸";
      node.toggle.setAttribute("aria-expanded", "false");
      return;
    }
    if (!node.loaded || force) {
      await run(async () => {
        const res = await search(dn, "one", "(objectClass=*)", "1.1", 1000);
        clear(node.children);
        const sorted = res.entries.map((e) => e.dn).sort((a, b) => a.localeCompare(b));
        for (const child of sorted) node.children.append(makeNode(child, rdnOf(child)));
        if (!sorted.length) node.children.append(h("li", { class: "muted small", text: "(no children)" }));
        if (res.hasMore) node.children.append(h("li", { class: "muted small", text: `… ${res.totalCount} in all` }));
        node.loaded = true;
      }, `Listing ${dn}`);
    }
    node.open = true;
    node.children.hidden = false;
    node.toggle.textContent = "▾";
    node.toggle.setAttribute("aria-expanded", "true");
  }

  async function refreshParent(dn) {
    const parent = parentOf(dn);
    if (nodes.has(parent.toLowerCase())) await expand(parent, true);
  }

  async function show(dn) {
    clear(detail);
    if (!dn) {
      detail.append(h("p", { class: "muted", text: "Select an entry in the tree." }));
      return;
    }
    let entry;
    try {
      entry = await api("GET", `${entryPath(dn)}?attributes=${encodeURIComponent("*,+")}`);
    } catch (err) {
      detail.append(h("p", { class: "error-text", text: `${dn}: ${err.message}` }));
      return;
    }
    const rows = [];
    for (const [name, values] of Object.entries(entry.attributes)) {
      for (const v of values) {
        rows.push(h("tr", { class: isOperational(name) ? "operational" : null },
          h("th", { scope: "row", text: name }), h("td", { class: "value", text: v })));
      }
    }
    detail.append(h("h3", { class: "dn", text: entry.dn }),
      h("div", { class: "actions" },
        button("Edit", () => editForm(entry)), button("Add child", () => addForm(entry.dn)),
        button("Move / rename", () => moveForm(entry.dn), { class: "secondary" }),
        button("Delete", () => remove(entry.dn), { class: "danger" })),
      table(["Attribute", "Value"], rows, { "aria-label": "Entry attributes" }));
  }

  function editForm(entry) {
    const editor = new AttributeEditor(entry.attributes);
    clear(detail).append(h("h3", { class: "dn", text: `Edit ${entry.dn}` }), editor.element,
      h("div", { class: "actions" },
        button("Save", () => run(async () => {
          const changes = editor.changes();
          if (!changes.length) {
            showNotice("Nothing changed.");
            return;
          }
          await api("PATCH", entryPath(entry.dn), { changes });
          showNotice(`Saved ${entry.dn}.`);
          await show(entry.dn);
        }, "Save failed")),
        button("Cancel", () => show(entry.dn), { class: "secondary" })));
  }

  function addForm(parent) {
    const rdn = input({ placeholder: "ou=people", name: "rdn" });
    const editor = new AttributeEditor({ objectClass: ["top", "organizationalUnit"] });
    clear(detail).append(h("h3", { text: `New entry under ${parent}` }),
      field("RDN", rdn, `e.g. ou=people or cn=printers; the DN becomes RDN,${parent}`),
      editor.element,
      h("div", { class: "actions" },
        button("Create", () => run(async () => {
          const dn = `${rdn.value.trim()},${parent}`;
          const attributes = editor.values();
          const [attr, value] = rdn.value.split("=");
          if (attr && value && !Object.keys(attributes).some((k) => k.toLowerCase() === attr.trim().toLowerCase())) {
            attributes[attr.trim()] = [value.trim()];
          }
          await api("POST", "/entries", { dn, attributes });
          showNotice(`Created ${dn}.`);
          await refreshParent(dn);
          location.hash = `#/entries/${encodeURIComponent(dn)}`;
        }, "Create failed")),
        button("Cancel", () => show(parent), { class: "secondary" })));
  }

  function moveForm(dn) {
    const newRDN = input({ value: rdnOf(dn), name: "newRDN" });
    const newParent = input({ value: parentOf(dn), name: "newSuperior" });
    const keep = h("input", { type: "checkbox", checked: true });
    clear(detail).append(h("h3", { text: `Move or rename ${dn}` }),
      field("New RDN", newRDN), field("New parent DN", newParent),
      h("div", { class: "field check" }, h("label", {}, keep, " Delete the old RDN value")),
      h("div", { class: "actions" },
        button("Move", () => run(async () => {
          const body = { newRDN: newRDN.value.trim(), deleteOldRDN: keep.checked };
          if (newParent.value.trim() && newParent.value.trim() !== parentOf(dn)) {
            body.newSuperior = newParent.value.trim();
          }
          const moved = await api("POST", `${entryPath(dn)}/move`, body);
          showNotice(`Moved to ${moved.dn}.`);
          await refreshParent(dn);
          await refreshParent(moved.dn);
          location.hash = `#/entries/${encodeURIComponent(moved.dn)}`;
        }, "Move failed")),
        button("Cancel", () => show(dn), { class: "secondary" })));
  }

  async function remove(dn) {
    if (!window.confirm(`Delete ${dn}? This cannot be undone.`)) return;
    await run(async () => {
      await api("DELETE", entryPath(dn));
      showNotice(`Deleted ${dn}.`);
      await refreshParent(dn);
      location.hash = "#/entries";
    }, "Delete failed");
  }

  tree.append(makeNode(base, base));
  await expand(base);
  // open the path down to the selected entry
  if (selected && selected.toLowerCase().endsWith(base.toLowerCase())) {
    const chain = [];
    for (let dn = parentOf(selected); dn && dn.length > base.length; dn = parentOf(dn)) chain.unshift(dn);
    for (const dn of chain) if (!nodes.get(dn.toLowerCase())?.open) await expand(dn);
  }
  await show(selected);
}
