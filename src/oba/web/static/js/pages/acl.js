// ACL rule editor: rules list with add/edit/delete, default policy, validation of a whole
// document and "explain" (why a subject may or may not do something). Rules: every change goes
// through /api/v1/acl/...; the server's answer (or its error message) is shown as is.

import { api } from "../api.js";
import {
  button, card, clear, field, h, input, run, select, showNotice, splitList, table,
} from "../ui.js";

function ruleForm(rule, onSave, onCancel) {
  const target = input({ value: rule.target || "", name: "target" });
  const subject = input({ value: rule.subject || "", name: "subject" });
  const scope = select(["subtree", "base", "one", "children"], rule.scope || "subtree", { name: "scope" });
  const rights = input({ value: (rule.rights || []).join(", "), name: "rights" });
  const attributes = input({ value: (rule.attributes || []).join(", "), name: "attributes" });
  const deny = h("input", { type: "checkbox", checked: Boolean(rule.deny) });
  const form = h("form", { class: "form-grid", "aria-label": "ACL rule" },
    field("Target DN", target, "* for everything"), field("Subject", subject,
      "anonymous, authenticated, self, * or a DN / group:DN"),
    field("Scope", scope), field("Rights", rights, "comma-separated: read, write, add, delete, search, compare, all"),
    field("Attributes", attributes, "comma-separated; empty = all"),
    h("div", { class: "field check" }, h("label", {}, deny, " Deny rule")),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Save rule" }),
      button("Cancel", onCancel, { class: "secondary" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const out = { target: target.value.trim(), subject: subject.value.trim(), scope: scope.value,
      rights: splitList(rights.value) };
    const attrs = splitList(attributes.value);
    if (attrs.length) out.attributes = attrs;
    if (deny.checked) out.deny = true;
    onSave(out);
  });
  return form;
}

function explainAnswer(box, res) {
  clear(box);
  const yes = res.allowed === true;
  box.append(h("p", { class: yes ? "ok-text" : "error-text" },
    h("strong", { text: yes ? "Allowed" : "Denied" }), res.reason ? ` — ${res.reason}` : ""));
  const rule = res.rule;
  if (rule === "default") {
    box.append(h("p", { class: "muted", text: "Decided by the default policy." }));
  } else if (rule && typeof rule === "object") {
    const r = rule.rule || {};
    box.append(h("p", { class: "muted", text: `Decided by rule ${rule.index}: ${r.deny ? "deny" : "allow"} ` +
      `${(r.rights || []).join(", ")} on ${r.target} (${r.scope || "subtree"}) to ${r.subject}` }));
  }
}

export async function render(main) {
  const rulesBox = h("div");
  const editBox = h("div");
  const policyBox = h("div");
  const explainBox = h("div");
  const validateBox = h("div");
  main.append(h("div", { class: "grid" },
    card("Rules", policyBox, rulesBox, editBox),
    h("div", {}, card("Explain a decision", explainBox), card("Validate a document", validateBox))));

  async function load() {
    const doc = await api("GET", "/acl");
    const policy = select(["allow", "deny"], doc.defaultPolicy, { name: "defaultPolicy" });
    clear(policyBox).append(h("form", { class: "inline", "aria-label": "Default policy" },
      field("Default policy", policy), button("Set default", () => run(async () => {
        await api("PUT", "/acl/default", { policy: policy.value });
        showNotice(`Default policy is now ${policy.value}.`);
        await load();
      }, "Setting the default failed"))),
    h("p", { class: "muted small", text: `${doc.rules.length} rules` +
      (doc.stats && doc.stats.filePath ? ` · file ${doc.stats.filePath}` : " · no ACL file") }));
    const rows = doc.rules.map((r, i) => h("tr", {},
      h("td", { class: "num", text: i }), h("td", { text: r.target }), h("td", { text: r.subject }),
      h("td", { text: r.scope || "subtree" }), h("td", { text: (r.rights || []).join(", ") }),
      h("td", { text: (r.attributes || []).join(", ") || "all" }),
      h("td", {}, r.deny ? h("span", { class: "badge off", text: "deny" }) : h("span", { class: "badge on", text: "allow" })),
      h("td", { class: "actions" },
        button("Edit", () => edit(r, i), { class: "link", "aria-label": `Edit rule ${i}` }),
        button("Delete", () => run(async () => {
          await api("DELETE", `/acl/rules/${i}`);
          showNotice(`Deleted rule ${i}.`);
          await load();
        }, "Delete failed"), { class: "link danger", "aria-label": `Delete rule ${i}` }))));
    clear(rulesBox).append(table(["#", "Target", "Subject", "Scope", "Rights", "Attributes", "Effect", ""],
      rows, { "aria-label": "ACL rules" }), button("Add rule", () => edit({}, -1)));
  }

  function edit(rule, index) {
    clear(editBox).append(h("h3", { text: index < 0 ? "New rule" : `Edit rule ${index}` }),
      ruleForm(rule, (out) => run(async () => {
        if (index < 0) await api("POST", "/acl/rules", { rule: out, index: -1 });
        else await api("PUT", `/acl/rules/${index}`, out);
        showNotice(index < 0 ? "Rule added." : `Rule ${index} saved.`);
        clear(editBox);
        await load();
      }, "Saving the rule failed"), () => clear(editBox)));
  }

  // explain
  const who = input({ name: "explainSubject", placeholder: "uid=alice,ou=users,…" });
  const target = input({ name: "explainTarget" });
  const right = select(["read", "write", "add", "delete", "search", "compare"], "read", { name: "right" });
  const attribute = input({ name: "explainAttribute", placeholder: "optional" });
  const answer = h("div", { "aria-live": "polite" });
  const explainForm = h("form", { class: "form-grid", "aria-label": "Explain" },
    field("Subject DN", who, "empty = anonymous"), field("Target DN", target), field("Right", right),
    field("Attribute", attribute),
    h("div", { class: "actions" }, h("button", { type: "submit", text: "Explain" })), answer);
  explainForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { bindDN: who.value.trim(), targetDN: target.value.trim(), right: right.value };
    if (attribute.value.trim()) body.attribute = attribute.value.trim();
    try {
      explainAnswer(answer, await api("POST", "/acl/explain", body));
    } catch (err) {
      const msg = err.status === 404 && err.code === "not_found"
        ? "this server does not offer ACL explanations yet" : err.message;
      clear(answer).append(h("p", { class: "error-text", text: `Explain failed: ${msg}` }));
    }
  });
  explainBox.append(explainForm);

  // validate
  const doc = h("textarea", { rows: 8, name: "aclDocument", spellcheck: "false" });
  const verdict = h("div", { "aria-live": "polite" });
  validateBox.append(field("ACL document (JSON)", doc), h("div", { class: "actions" },
    button("Load current", () => run(async () => {
      const cur = await api("GET", "/acl");
      doc.value = JSON.stringify({ defaultPolicy: cur.defaultPolicy, rules: cur.rules }, null, 2);
    }), { class: "secondary" }),
    button("Validate", async () => {
      clear(verdict);
      let parsed;
      try {
        parsed = JSON.parse(doc.value || "{}");
      } catch (err) {
        verdict.append(h("p", { class: "error-text", text: `Not valid JSON: ${err.message}` }));
        return;
      }
      try {
        const res = await api("POST", "/acl/validate", parsed);
        verdict.append(h("p", { class: res.valid ? "ok-text" : "error-text",
          text: res.valid ? "The document is valid." : `Invalid: ${res.message || ""}` }));
        for (const e of res.errors || []) verdict.append(h("p", { class: "error-text small", text: String(e) }));
      } catch (err) {
        verdict.append(h("p", { class: "error-text", text: `Invalid: ${err.message}` }));
      }
    })), verdict);
  await load();
}
