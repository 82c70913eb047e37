// The signed-in user's own account: changing their password (the current one is asked for).
// The server ends the user's other sessions; this one stays signed in.

import { api } from "./api.js";
import { h } from "./util.js";

export function render(ctx) {
  const message = h("p.message", { role: "status", id: "account-message" });
  const field = (id, label, autocomplete) => {
    const input = h("input", { id, type: "password", autocomplete, required: true });
    return [input, h("label", {}, label, input)];
  };
  const [current, currentLabel] = field("password-current", "Current password", "current-password");
  const [fresh, freshLabel] = field("password-new", "New password", "new-password");
  const [again, againLabel] = field("password-again", "New password again", "new-password");
  const button = h("button.primary", { type: "submit", id: "password-change" }, "Change password");
  const form = h("form.account", {
    onsubmit: async (e) => {
      e.preventDefault();
      message.classList.remove("done");
      if (fresh.value !== again.value) {
        message.textContent = "The two new passwords differ.";
        again.select();
        return;
      }
      button.disabled = true;
      message.textContent = "";
      try {
        await api("PUT", "/api/v1/users/me/password", { current: current.value, new: fresh.value });
        for (const input of [current, fresh, again]) input.value = "";
        message.classList.add("done");
        message.textContent = "Password changed. Your other sessions are signed out.";
      } catch (err) {
        // The server's own words for a password it refuses (too short, too long) are clear.
        message.textContent =
          err.code === "wrong_password" ? "The current password is not right; nothing was changed."
          : err.status === 429 ? `Too many wrong passwords. Try again in ${err.retryAfter ?? "a few"} seconds.`
          : err.message;
      } finally {
        button.disabled = false;
      }
    },
  }, h("h2", {}, "Your password"),
    h("p.meta", {}, `Signed in as ${ctx.store.user.name} (${ctx.store.user.role}).`),
    currentLabel, freshLabel, againLabel, button, message);
  return { el: h("section.account", {}, form) };
}
