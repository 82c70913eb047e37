// Administration, for administrators: sites, users, a one-time enrollment code for a phone
// (as text and as a QR code the phone's app scans), and revoking a lost phone.

import { api, sitePath } from "./api.js";
import { h, fill, time, short } from "./util.js";

export function render(ctx) {
  const el = h("section.admin", {});
  const sites = h("div", { id: "admin-sites" });
  const users = h("div", { id: "admin-users" });
  const enrollment = h("div", { id: "admin-enrollment" });
  const devices = h("div", { id: "admin-devices" });
  const message = h("p.message", { role: "status", id: "admin-message" });
  // Outside the users' list, which is redrawn after a user is added: the token stays shown.
  const token = h("p.secret", { id: "new-user-token" });
  const global = ctx.store.user?.all_sites || ctx.store.user?.sites === undefined;

  async function loadSites() {
    const { sites: list } = await api("GET", "/api/v1/sites");
    ctx.store.sites = list;
    const id = h("input", { placeholder: "site id, e.g. site-2", id: "new-site-id" });
    const name = h("input", { placeholder: "name", id: "new-site-name" });
    fill(sites, h("h2", {}, "Sites"),
      h("table.log", {}, h("tbody", {}, list.map((s) => h("tr", {}, h("td.mono", {}, s.site_id), h("td", {}, s.name), h("td", {}, time(s.created_at)))))),
      global ? h("form.inline", {
        onsubmit: async (e) => {
          e.preventDefault();
          await run(async () => {
            await api("POST", "/api/v1/sites", { site_id: id.value.trim(), name: name.value.trim() || null });
            message.textContent = `Site ${id.value.trim()} created.`;
            await loadSites();
          });
        },
      }, id, name, h("button", { type: "submit" }, "Add site")) : null);
  }

  async function loadUsers() {
    const { users: list } = await api("GET", "/api/v1/users");
    const name = h("input", { placeholder: "name", id: "new-user-name", autocomplete: "off" });
    const role = h("select", { id: "new-user-role" }, h("option", { value: "operator" }, "operator"), h("option", { value: "admin" }, "administrator"));
    const password = h("input", { type: "password", placeholder: "password (optional)", id: "new-user-password", autocomplete: "new-password" });
    const active = list.filter((u) => !u.revoked_at);
    const who = h("select", { id: "set-password-user", "aria-label": "User" }, active.map((u) => h("option", { value: u.id }, u.name)));
    const newPassword = h("input", { type: "password", placeholder: "new password", id: "set-password", autocomplete: "new-password" });
    fill(users, h("h2", {}, "Users"),
      h("table.log", {},
        h("thead", {}, h("tr", {}, ["Name", "Role", "Sites", "Created", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, list.map((u) => h("tr", { class: u.revoked_at ? "revoked" : "", dataset: { user: u.name } },
          h("td", {}, u.name), h("td", {}, u.role), h("td", {}, u.all_sites ? "all sites" : u.sites.join(", ")),
          h("td", {}, time(u.created_at)),
          h("td", {}, u.revoked_at ? `revoked ${time(u.revoked_at)}` : h("button", {
            onclick: () => run(async () => {
              if (!confirm(`Revoke ${u.name}? Their token and sessions stop working.`)) return;
              await api("POST", `/api/v1/users/${encodeURIComponent(u.id)}/revoke`, {});
              message.textContent = `${u.name} revoked.`;
              await loadUsers();
            }),
          }, "Revoke")))))),
      h("h3", {}, `Add a user of ${ctx.site}`),
      h("form.inline", {
        id: "new-user",
        onsubmit: async (e) => {
          e.preventDefault();
          await run(async () => {
            const body = { name: name.value.trim(), role: role.value, sites: [ctx.site] };
            // Without one the user has only the API token until a password is set below.
            if (password.value) body.password = password.value;
            const created = await api("POST", "/api/v1/users", body);
            fill(token, `${created.user.name} can use the API with this token, shown once: `, h("code", {}, created.token),
              body.password ? ". They sign in here with the password given." : ". To sign in here they need a password: set one below.");
            await loadUsers();
          });
        },
      }, name, role, password, h("button", { type: "submit" }, "Add user")),
      token,
      h("h3", {}, "Set a user's password"),
      h("p.meta", {}, "For a user who forgot theirs: they are signed out everywhere and sign in with this one."),
      h("form.inline", {
        id: "set-password-form",
        onsubmit: async (e) => {
          e.preventDefault();
          const user = active.find((u) => u.id === who.value);
          if (!user) return;
          await run(async () => {
            await api("PUT", `/api/v1/users/${encodeURIComponent(user.id)}/password`, { new: newPassword.value });
            newPassword.value = "";
            message.textContent = `${user.name}'s password is set.`;
          });
        },
      }, who, newPassword, h("button", { type: "submit" }, "Set password")));
  }

  function drawEnrollment() {
    const out = h("div.enroll-code");
    fill(enrollment, h("h2", {}, "Enroll a phone"),
      h("p", {}, "A one-time code enrolls one phone on this site. The guard's app scans the QR code, or the code is typed."),
      h("button.primary", {
        id: "new-enrollment-code",
        onclick: () => run(async () => {
          const code = await api("POST", sitePath(ctx.site, "/enrollment-codes"), {});
          // What the app reads: this server's address and the code.
          const text = `patrol://enroll?server=${encodeURIComponent(location.origin)}&code=${encodeURIComponent(code.code)}`;
          const svg = await api("POST", "/console/qr", { text });
          const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
          const picture = h("div.qr", { id: "enrollment-qr" });
          if (doc.documentElement?.nodeName === "svg") picture.append(document.importNode(doc.documentElement, true));
          fill(out, picture, h("p", {}, "Code: ", h("code", { id: "enrollment-code" }, code.code)),
            h("p.meta", {}, `Valid until ${time(code.expires_at)}, once.`));
        }),
      }, "New enrollment code"),
      out);
  }

  async function loadDevices() {
    const answer = await api("GET", sitePath(ctx.site, "/devices"));
    fill(devices, h("h2", {}, "Phones"),
      h("table.log", {}, h("tbody", {}, answer.devices.map((d) => h("tr", { dataset: { device: d.device_id } },
        h("td", {}, d.guard || "—"), h("td.mono", { title: d.device_id }, short(d.device_id)),
        h("td", {}, `enrolled ${time(d.enrolled_at)}`),
        h("td", {}, d.revoked_at ? `revoked ${time(d.revoked_at)}` : h("button.danger", {
          onclick: () => run(async () => {
            if (!confirm(`Revoke the phone ${short(d.device_id)}${d.guard ? ` (last used by ${d.guard})` : ""}? Its syncs are refused from then on.`)) return;
            await api("POST", sitePath(ctx.site, `/devices/${d.device_id}/revoke`), {});
            message.textContent = `Phone ${short(d.device_id)} revoked.`;
            await loadDevices();
          }),
        }, "Revoke")))))));
  }

  async function run(fn) {
    message.textContent = "";
    try {
      await fn();
    } catch (e) {
      message.textContent = e.message;
    }
  }

  fill(el, message, h("div.columns", {}, h("div", {}, enrollment, devices), h("div", {}, users, sites)));
  drawEnrollment();
  run(loadSites);
  run(loadUsers);
  run(loadDevices);
  return { el };
}
