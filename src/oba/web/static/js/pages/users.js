// Users and groups under ou=users and ou=groups of the base: create, edit, delete, reset
// password, disable/enable, unlock, group membership. Rules: groups are groupOfNames
// (member holds user DNs); a group keeps at least one member, as the schema requires.

import { api, baseDN, entryPath, search } from "../api.js";
import { button, card, clear, field, h, input, run, showNotice, table } from "../ui.js";

const first = (e, name) => (e.attributes[name] || [])[0] || "";

export async function render(main) {
  const base = await baseDN();
  const usersOU = `ou=users,${base}`;
  const groupsOU = `ou=groups,${base}`;
  const userBox = h("div");
  const userForm = h("div");
  const groupBox = h("div");
  const groupDetail = h("div");
  main.append(h("div", { class: "grid" },
    card("Users", userForm, userBox), card("Groups", groupBox, groupDetail)));

  async function loadUsers() {
    const res = await search(usersOU, "one", "(objectClass=*)", "uid,cn,mail,obaDisabled", 1000);
    const rows = res.entries.sort((a, b) => a.dn.localeCompare(b.dn)).map((e) => {
      const disabled = /^(true|1|yes)$/i.test(first(e, "obaDisabled"));
      const uid = first(e, "uid") || e.dn;
      return h("tr", { "data-dn": e.dn },
        h("td", {}, h("a", { href: `#/entries/${encodeURIComponent(e.dn)}`, text: uid })),
        h("td", { text: first(e, "cn") }), h("td", { text: first(e, "mail") }),
        h("td", {}, h("span", { class: `badge ${disabled ? "off" : "on"}`, text: disabled ? "disabled" : "active" })),
        h("td", { class: "actions" },
          button("Edit", () => editUser(e.dn), { "aria-label": `Edit ${uid}`, class: "link" }),
          button("Password", () => resetPassword(e.dn, uid), { "aria-label": `Reset password of ${uid}`, class: "link" }),
          button(disabled ? "Enable" : "Disable", () => run(async () => {
            await api("POST", `${entryPath(e.dn)}/${disabled ? "enable" : "disable"}`);
            showNotice(`${uid} ${disabled ? "enabled" : "disabled"}.`);
            await loadUsers();
          }, "Change failed"), { "aria-label": `${disabled ? "Enable" : "Disable"} ${uid}`, class: "link" }),
          button("Unlock", () => run(async () => {
            await api("POST", `${entryPath(e.dn)}/unlock`);
            showNotice(`${uid} unlocked.`);
          }, "Unlock failed"), { "aria-label": `Unlock ${uid}`, class: "link" }),
          button("Delete", () => run(async () => {
            if (!window.confirm(`Delete ${e.dn}?`)) return;
            await api("DELETE", entryPath(e.dn));
            showNotice(`Deleted ${uid}.`);
            await loadUsers();
          }, "Delete failed"), { "aria-label": `Delete ${uid}`, class: "link danger" })));
    });
    clear(userBox).append(table(["User", "Name", "Email", "Status", "Actions"], rows,
      { "aria-label": "Users" }));
  }

  function newUserForm() {
    const uid = input({ name: "uid" });
    const given = input({ name: "givenName" });
    const sn = input({ name: "sn" });
    const cn = input({ name: "cn", placeholder: "given name + surname" });
    const mail = input({ name: "mail", type: "email" });
    const password = input({ name: "userPassword", type: "password", autocomplete: "new-password" });
    const form = h("form", { class: "form-grid", "aria-label": "New user" },
      field("User ID", uid), field("Given name", given), field("Surname", sn),
      field("Common name", cn), field("Email", mail), field("Initial password", password),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create user" })));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        const attributes = {
          objectClass: ["top", "person", "organizationalPerson", "inetOrgPerson"],
          uid: [uid.value.trim()], sn: [sn.value.trim()],
          cn: [cn.value.trim() || `${given.value.trim()} ${sn.value.trim()}`.trim()],
        };
        if (given.value.trim()) attributes.givenName = [given.value.trim()];
        if (mail.value.trim()) attributes.mail = [mail.value.trim()];
        if (password.value) attributes.userPassword = [password.value];
        const dn = `uid=${uid.value.trim()},${usersOU}`;
        await api("POST", "/entries", { dn, attributes });
        showNotice(`Created user ${uid.value.trim()}.`);
        form.reset();
        await loadUsers();
      }, "Create user failed");
    });
    clear(userForm).append(h("details", {}, h("summary", { text: "New user" }), form));
  }

  async function editUser(dn) {
    const entry = await run(() => api("GET", entryPath(dn)), "Load failed");
    if (!entry) return;
    const inputs = {};
    const fields = [["givenName", "Given name"], ["sn", "Surname"], ["cn", "Common name"],
      ["mail", "Email"], ["telephoneNumber", "Telephone"], ["title", "Title"]];
    for (const [name] of fields) inputs[name] = input({ value: first(entry, name), name });
    const form = h("form", { class: "form-grid", "aria-label": `User form for ${dn}` },
      fields.map(([name, label]) => field(label, inputs[name])),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Save user" }),
        button("Cancel", () => newUserForm(), { class: "secondary" })));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        const changes = [];
        for (const [name] of fields) {
          const now = inputs[name].value.trim();
          if (now === first(entry, name)) continue;
          changes.push(now ? { operation: "replace", attribute: name, values: [now] }
            : { operation: "delete", attribute: name, values: [] });
        }
        if (changes.length) await api("PATCH", entryPath(dn), { changes });
        showNotice(changes.length ? `Saved ${dn}.` : "Nothing changed.");
        newUserForm();
        await loadUsers();
      }, "Save failed");
    });
    clear(userForm).append(h("h3", { class: "dn", text: dn }), form);
  }

  function resetPassword(dn, uid) {
    const pw = input({ type: "password", name: "newPassword", autocomplete: "new-password" });
    const form = h("form", { class: "form-grid", "aria-label": `Password form for ${uid}` },
      field(`New password for ${uid}`, pw),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Set password" }),
        button("Cancel", () => newUserForm(), { class: "secondary" })));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        await api("PATCH", entryPath(dn), { changes: [
          { operation: "replace", attribute: "userPassword", values: [pw.value] }] });
        showNotice(`Password of ${uid} changed.`);
        newUserForm();
      }, "Password change failed");
    });
    clear(userForm).append(form);
    pw.focus();
  }

  async function loadGroups() {
    const res = await search(groupsOU, "one", "(objectClass=*)", "cn,member,description", 1000);
    const rows = res.entries.sort((a, b) => a.dn.localeCompare(b.dn)).map((e) => {
      const cn = first(e, "cn") || e.dn;
      return h("tr", {}, h("td", {}, button(cn, () => showGroup(e.dn), { class: "link",
        "aria-label": `Open group ${cn}` })),
      h("td", { text: first(e, "description") }),
      h("td", { class: "num", text: (e.attributes.member || []).length }));
    });
    const name = input({ name: "groupCn" });
    const member = input({ name: "groupMember", placeholder: `uid=…,${usersOU}` });
    const form = h("form", { class: "form-grid", "aria-label": "New group" },
      field("Group name", name), field("First member DN", member),
      h("div", { class: "actions" }, h("button", { type: "submit", text: "Create group" })));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        const dn = `cn=${name.value.trim()},${groupsOU}`;
        await api("POST", "/entries", { dn, attributes: { objectClass: ["top", "groupOfNames"],
          cn: [name.value.trim()], member: [member.value.trim()] } });
        showNotice(`Created group ${name.value.trim()}.`);
        await loadGroups();
      }, "Create group failed");
    });
    clear(groupBox).append(table(["Group", "Description", "Members"], rows, { "aria-label": "Groups" }),
      h("details", {}, h("summary", { text: "New group" }), form));
  }

  async function showGroup(dn) {
    const entry = await run(() => api("GET", entryPath(dn)), "Load failed");
    if (!entry) return;
    const cn = first(entry, "cn");
    const members = entry.attributes.member || [];
    const add = input({ name: "addMember", placeholder: "uid or member DN" });
    const form = h("form", { class: "inline", "aria-label": `Membership of ${cn}` },
      field(`Add member to ${cn}`, add), h("button", { type: "submit", text: "Add member" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      run(async () => {
        let value = add.value.trim();
        if (value && !value.includes("=")) value = `uid=${value},${usersOU}`;
        await api("PATCH", entryPath(dn), { changes: [{ operation: "add", attribute: "member", values: [value] }] });
        showNotice(`Added ${value} to ${cn}.`);
        await showGroup(dn);
        await loadGroups();
      }, "Add member failed");
    });
    clear(groupDetail).append(h("h3", { text: `Members of ${cn}` }),
      table(["Member", ""], members.map((m) => h("tr", {}, h("td", { class: "value", text: m }),
        h("td", {}, button("Remove", () => run(async () => {
          await api("PATCH", entryPath(dn), { changes: [{ operation: "delete", attribute: "member", values: [m] }] });
          showNotice(`Removed ${m} from ${cn}.`);
          await showGroup(dn);
          await loadGroups();
        }, "Remove member failed"), { class: "link danger", "aria-label": `Remove ${m}` })))),
      { "aria-label": `Members of ${cn}` }),
      form,
      h("div", { class: "actions" }, button("Delete group", () => run(async () => {
        if (!window.confirm(`Delete group ${cn}?`)) return;
        await api("DELETE", entryPath(dn));
        showNotice(`Deleted group ${cn}.`);
        clear(groupDetail);
        await loadGroups();
      }, "Delete failed"), { class: "danger" })));
  }

  newUserForm();
  await Promise.all([
    run(loadUsers, `Cannot list ${usersOU}`), run(loadGroups, `Cannot list ${groupsOU}`)]);
}
