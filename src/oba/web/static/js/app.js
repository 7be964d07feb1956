// The shell: hash routes, navigation, login/logout. Rules: each page module exports
// render(main, params) and may return a cleanup function (timers); pages other than login need
// a token, otherwise the router shows the login page.

import { api, baseDN, session } from "./api.js";
import { button, clearNotice, field, h, input, clear, showError } from "./ui.js";
import * as dashboard from "./pages/dashboard.js";
import * as entries from "./pages/entries.js";
import * as searchPage from "./pages/search.js";
import * as users from "./pages/users.js";
import * as acl from "./pages/acl.js";
import * as config from "./pages/config.js";
import * as logs from "./pages/logs.js";

const ROUTES = {
  dashboard: { title: "Dashboard", page: dashboard },
  entries: { title: "Entries", page: entries },
  search: { title: "Search", page: searchPage },
  users: { title: "Users & groups", page: users },
  acl: { title: "Access control", page: acl },
  config: { title: "Configuration", page: config },
  logs: { title: "Logs", page: logs },
};

let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, ...rest] = raw.split("/");
  return { name: name || "dashboard", arg: rest.length ? decodeURIComponent(rest.join("/")) : "" };
}

function renderNav(active) {
  const nav = clear(document.getElementById("nav"));
  const who = clear(document.getElementById("who"));
  if (!session.token()) return;
  for (const [name, route] of Object.entries(ROUTES)) {
    nav.append(h("a", { href: `#/${name}`, class: name === active ? "active" : null,
      "aria-current": name === active ? "page" : null, text: route.title }));
  }
  who.append(h("span", { class: "muted", title: session.dn(), text: session.dn() }),
    button("Log out", () => {
      session.clear();
      location.hash = "#/login";
    }, { class: "secondary" }));
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const main = clear(document.getElementById("main"));
  const { name, arg } = parseHash();
  if (name === "login" || !session.token()) {
    renderNav("");
    document.title = "Log in · Oba admin";
    await renderLogin(main);
    return;
  }
  const found = ROUTES[name];
  if (!found) {
    location.hash = "#/dashboard";
    return;
  }
  renderNav(name);
  document.title = `${found.title} · Oba admin`;
  main.append(h("h1", { text: found.title }));
  try {
    const result = await found.page.render(main, arg);
    if (typeof result === "function") cleanup = result;
  } catch (err) {
    showError(err, `${found.title} could not load`);
  }
}

async function renderLogin(main) {
  let base = "";
  try {
    base = await baseDN();
  } catch {
    base = "";
  }
  const dn = input({ name: "dn", value: base ? `cn=admin,${base}` : "", autocomplete: "username" });
  const password = input({ type: "password", name: "password", autocomplete: "current-password" });
  const form = h("form", { class: "card login", "aria-label": "Log in" },
    h("h1", { text: "Log in to Oba" }),
    h("p", { class: "muted", text: "Bind with a directory DN and its password." }),
    field("Bind DN", dn), field("Password", password),
    h("button", { type: "submit", text: "Log in" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const res = await api("POST", "/auth/bind", { dn: dn.value.trim(), password: password.value });
      session.save(res.token, dn.value.trim());
      clearNotice();
      if (location.hash === "#/dashboard") await route();
      else location.hash = "#/dashboard";
    } catch (err) {
      showError(err, "Log in failed");
    }
  });
  main.append(form);
  dn.focus();
}

window.addEventListener("hashchange", () => { route(); });
window.addEventListener("oba:logout", () => {
  showError({ message: "your session ended; log in again" });
  location.hash = "#/login";
});
route();
