// The attribute editor: one row per value (attribute name, value, remove). Rules: values are
// edited as text; on save the editor compares with the original and produces REST
// modifications — replace for a changed attribute, delete for a removed one — so unchanged
// attributes are never rewritten.

import { button, h, input } from "./ui.js";

const OPERATIONAL = new Set(["createtimestamp", "modifytimestamp", "creatorsname",
  "modifiersname", "entryuuid", "entrycsn", "entrydn", "subschemasubentry",
  "hassubordinates", "numsubordinates", "structuralobjectclass", "memberof",
  "pwdchangedtime", "pwdfailuretime", "pwdaccountlockedtime"]);

export function isOperational(name) {
  return OPERATIONAL.has(name.toLowerCase());
}

export class AttributeEditor {
  constructor(attributes = {}) {
    this.body = h("tbody");
    this.original = {};
    for (const [name, values] of Object.entries(attributes)) {
      if (isOperational(name)) continue;
      this.original[name] = [...values];
      for (const v of values) this.addRow(name, v);
    }
    if (!this.body.children.length) this.addRow("", "");
    this.element = h("div", { class: "editor" },
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Attributes" },
        h("thead", {}, h("tr", {}, h("th", { text: "Attribute" }), h("th", { text: "Value" }),
          h("th", { text: "" }))), this.body)),
      button("Add value", () => this.addRow("", "", true), { class: "secondary" }));
  }

  addRow(name, value, focus = false) {
    const n = this.body.children.length + 1;
    const nameInput = input({ value: name, "aria-label": `Attribute name ${n}`, class: "attr-name" });
    const valueInput = input({ value, "aria-label": `Attribute value ${n}`, class: "attr-value" });
    const row = h("tr", {}, h("td", {}, nameInput), h("td", {}, valueInput),
      h("td", {}, button("Remove", () => row.remove(), { class: "link danger",
        "aria-label": `Remove value ${n}` })));
    this.body.append(row);
    if (focus) nameInput.focus();
  }

  /** {name: [values]} of the non-empty rows (names keep their first spelling). */
  values() {
    const out = {};
    const spelled = {};
    for (const row of this.body.querySelectorAll("tr")) {
      const name = row.querySelector(".attr-name").value.trim();
      const value = row.querySelector(".attr-value").value;
      if (!name || value === "") continue;
      const key = spelled[name.toLowerCase()] || name;
      spelled[name.toLowerCase()] = key;
      (out[key] = out[key] || []).push(value);
    }
    return out;
  }

  changes() {
    const now = this.values();
    const lower = (obj) => Object.fromEntries(Object.entries(obj).map(([k, v]) => [k.toLowerCase(), [k, v]]));
    const before = lower(this.original);
    const after = lower(now);
    const changes = [];
    for (const [key, [name, values]] of Object.entries(after)) {
      const old = before[key] ? before[key][1] : null;
      if (!old || old.length !== values.length || old.some((v, i) => v !== values[i])) {
        changes.push({ operation: "replace", attribute: name, values });
      }
    }
    for (const [key, [name]] of Object.entries(before)) {
      if (!after[key]) changes.push({ operation: "delete", attribute: name, values: [] });
    }
    return changes;
  }
}
